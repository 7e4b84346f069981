-- 001: the tables. Batches and items are the work; transitions is the audit trail (one row per
-- status change and one per creation, written by the triggers of 002); allowed_transitions is
-- the state machine's edge list (mirrors tracker/states.py; a test keeps them equal).
-- Times are unix epoch seconds (DOUBLE PRECISION); the views of 003 show them readable.

CREATE TABLE schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE batches (
    id                  TEXT PRIMARY KEY,          -- local id, sent as metadata.tracker_batch_id
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    endpoint            TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN (
                          'pending',      -- built locally, not yet accepted by the provider
                          'submitted',    -- accepted; the provider is validating it
                          'in_progress',  -- running (or finalizing, or cancelling)
                          'completed',    -- finished at the provider; results not yet stored
                          'failed',       -- refused, failed validation or expired; not yet stored
                          'cancelled',    -- cancelled at the provider; results not yet stored
                          'ingested')),   -- every item's outcome stored: closed
    status_reason       TEXT,                      -- why the last status change happened
    provider_batch_id   TEXT UNIQUE,               -- the provider's id, once known
    provider_status     TEXT,                      -- the provider's raw status (e.g. expired)
    input_file_id       TEXT,
    output_file_id      TEXT,
    error_file_id       TEXT,
    item_count          INTEGER NOT NULL,
    est_tokens          INTEGER NOT NULL DEFAULT 0,  -- estimated prompt tokens of its items
    request_total       INTEGER NOT NULL DEFAULT 0,
    request_completed   INTEGER NOT NULL DEFAULT 0,
    request_failed      INTEGER NOT NULL DEFAULT 0,
    create_attempted_at DOUBLE PRECISION,                      -- set before the create call: reconcile first
    create_attempts     INTEGER NOT NULL DEFAULT 0,  -- >1: sweep for duplicates before ingest
    cancel_requested    INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    duplicate_of        TEXT REFERENCES batches (id),  -- a second provider batch for one row
    next_action_at      DOUBLE PRECISION,                      -- next submit, poll or download attempt
    failures            INTEGER NOT NULL DEFAULT 0,  -- consecutive failed calls (back-off)
    last_error          TEXT,
    batch_errors        TEXT,                      -- JSON: the provider's batch-level errors
    succeeded_count     INTEGER NOT NULL DEFAULT 0,  -- ingest summary
    failed_count        INTEGER NOT NULL DEFAULT 0,
    requeued_count      INTEGER NOT NULL DEFAULT 0,
    cancelled_count     INTEGER NOT NULL DEFAULT 0,
    created_at          DOUBLE PRECISION NOT NULL,
    updated_at          DOUBLE PRECISION NOT NULL,
    submitted_at        DOUBLE PRECISION,
    ended_at            DOUBLE PRECISION,
    ingested_at         DOUBLE PRECISION
);
CREATE INDEX batches_open ON batches (status, next_action_at) WHERE status <> 'ingested';

CREATE TABLE items (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,  -- enqueue order
    id                TEXT PRIMARY KEY,            -- the caller's id; the provider's custom_id
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    payload           TEXT NOT NULL,               -- JSON input_payload, as enqueued
    est_tokens        INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL CHECK (status IN (
                        'queued',     -- waiting to be packed into a batch
                        'in_batch',   -- in a batch being submitted or run
                        'succeeded',  -- result stored (terminal)
                        'failed',     -- permanent error or out of attempts (terminal)
                        'cancelled')),  -- its batch was cancelled (terminal)
    status_reason     TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,  -- provider batches it has been sent in
    free_attempts     INTEGER NOT NULL DEFAULT 0,  -- of those, not counted against
                                                   -- max_attempts (validation refunds,
                                                   -- sends before a tracker retry)
    batch_id          TEXT REFERENCES batches (id),  -- the batch it is or was last in
    not_before        DOUBLE PRECISION NOT NULL DEFAULT 0,     -- back-off: not packed before this time
    output_text       TEXT,
    output_data       TEXT,                        -- JSON: the result line as the provider sent it
    error_message     TEXT,
    error_code        TEXT,
    error_status      INTEGER,                     -- HTTP status of a failed line, if any
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    created_at        DOUBLE PRECISION NOT NULL,
    updated_at        DOUBLE PRECISION NOT NULL,
    finished_at       DOUBLE PRECISION
);
CREATE INDEX items_queued ON items (provider, model, not_before) WHERE status = 'queued';
CREATE INDEX items_batch ON items (batch_id) WHERE batch_id IS NOT NULL;

CREATE TABLE transitions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- append-only, ids grow
    entity      TEXT NOT NULL CHECK (entity IN ('batch', 'item')),
    entity_id   TEXT NOT NULL,
    from_status TEXT,                              -- NULL for the creation row
    to_status   TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    reason      TEXT
);
CREATE INDEX transitions_entity ON transitions (entity, entity_id);

CREATE TABLE allowed_transitions (
    entity      TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    PRIMARY KEY (entity, from_status, to_status)
);
INSERT INTO allowed_transitions (entity, from_status, to_status) VALUES
    ('item', 'queued', 'in_batch'),       -- packed into a batch
    ('item', 'queued', 'cancelled'),      -- cancelled before it was sent
    ('item', 'in_batch', 'succeeded'),    -- result stored
    ('item', 'in_batch', 'failed'),       -- permanent error, or out of attempts
    ('item', 'in_batch', 'queued'),       -- retryable: sent again later
    ('item', 'in_batch', 'cancelled'),    -- its batch was cancelled
    ('item', 'failed', 'queued'),         -- tracker retry --failed
    ('item', 'cancelled', 'queued'),      -- tracker retry --cancelled
    ('batch', 'pending', 'submitted'),    -- the provider accepted it
    ('batch', 'pending', 'in_progress'),  -- adopted by reconcile, already running
    ('batch', 'pending', 'completed'),    -- adopted by reconcile, already finished
    ('batch', 'pending', 'failed'),       -- refused outright, or adopted failed
    ('batch', 'pending', 'cancelled'),    -- cancelled before (or while) it was created
    ('batch', 'submitted', 'in_progress'),
    ('batch', 'submitted', 'completed'),
    ('batch', 'submitted', 'failed'),
    ('batch', 'submitted', 'cancelled'),
    ('batch', 'in_progress', 'completed'),
    ('batch', 'in_progress', 'failed'),
    ('batch', 'in_progress', 'cancelled'),
    ('batch', 'completed', 'ingested'),   -- results stored
    ('batch', 'failed', 'ingested'),
    ('batch', 'cancelled', 'ingested');

-- One daemon per database: the holder renews expires_at with a heartbeat.
CREATE TABLE daemon_lease (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL
);

-- A provider the daemon stopped submitting to (bad key, no quota), and when it probes again.
CREATE TABLE provider_state (
    provider      TEXT PRIMARY KEY,
    paused_reason TEXT,
    paused_at     DOUBLE PRECISION,
    next_probe_at DOUBLE PRECISION,
    updated_at    DOUBLE PRECISION NOT NULL
);
