"""SQLModel tables: the typed view of the schema that `schema/` creates.

The SQL files are the source of the schema (operators read them, migrations apply them);
these classes mirror it for typed reads, and a test checks every column matches.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class Batch(SQLModel, table=True):
    __tablename__ = "batches"

    id: str = Field(primary_key=True)
    provider: str
    model: str
    endpoint: str
    status: str
    status_reason: str | None = None
    provider_batch_id: str | None = Field(default=None, unique=True)
    provider_status: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    item_count: int
    est_tokens: int = 0
    request_total: int = 0
    request_completed: int = 0
    request_failed: int = 0
    create_attempted_at: float | None = None
    create_attempts: int = 0
    cancel_requested: int = 0
    duplicate_of: str | None = Field(default=None, foreign_key="batches.id")
    next_action_at: float | None = None
    failures: int = 0
    last_error: str | None = None
    batch_errors: str | None = None
    succeeded_count: int = 0
    failed_count: int = 0
    requeued_count: int = 0
    cancelled_count: int = 0
    created_at: float
    updated_at: float
    submitted_at: float | None = None
    ended_at: float | None = None
    ingested_at: float | None = None
    input_file_created_at: int | None = None
    last_seen_at: float | None = None
    results_missing_since: float | None = None
    requeue_unfinished: int = 0
    claimed_by: str | None = None
    claim_token: int = 0
    claim_expires_at: float | None = None
    claim_heartbeat_at: float | None = None
    job: str = "default"
    budget_hold_usd: str | None = None
    budget_wait: str | None = None
    provider_time_at_intent: int | None = None
    sent_request_count: int | None = None


class Item(SQLModel, table=True):
    __tablename__ = "items"

    id: str = Field(primary_key=True)
    provider: str
    model: str
    payload: str
    est_tokens: int = 0
    status: str
    status_reason: str | None = None
    attempts: int = 0
    free_attempts: int = 0
    batch_id: str | None = Field(default=None, foreign_key="batches.id")
    not_before: float = 0.0
    output_text: str | None = None
    output_data: str | None = None
    error_message: str | None = None
    error_code: str | None = None
    error_status: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    created_at: float
    updated_at: float
    finished_at: float | None = None
    job: str = "default"
    metadata_: str | None = Field(default=None, sa_column_kwargs={"name": "metadata"})
    custom_id: str | None = None


class Transition(SQLModel, table=True):
    __tablename__ = "transitions"

    id: int | None = Field(default=None, primary_key=True)
    entity: str
    entity_id: str
    from_status: str | None = None
    to_status: str
    at: float
    reason: str | None = None


class DaemonLease(SQLModel, table=True):
    __tablename__ = "daemon_lease"

    name: str = Field(primary_key=True)
    holder: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    expires_at: float
    token: int = 0


class ProviderState(SQLModel, table=True):
    __tablename__ = "provider_state"

    provider: str = Field(primary_key=True)
    paused_reason: str | None = None
    paused_at: float | None = None
    next_probe_at: float | None = None
    updated_at: float


class Worker(SQLModel, table=True):
    __tablename__ = "workers"

    id: str = Field(primary_key=True)
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    expires_at: float


class FileDeletion(SQLModel, table=True):
    __tablename__ = "file_deletions"

    provider: str = Field(primary_key=True)
    file_id: str = Field(primary_key=True)
    batch_id: str = Field(foreign_key="batches.id")
    kind: str
    created_at: float
    due_at: float
    attempts: int = 0
    last_error: str | None = None
    deleted_at: float | None = None
