"""The state machine on a real SQLite file: Python tables, triggers and history agree."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from tracker import states
from tracker.errors import IllegalTransition, StaleTransition
from tracker.store import transitions
from tracker.store.engine import read, write

ITEM_STATUSES = [s.value for s in states.ItemStatus]
BATCH_STATUSES = [s.value for s in states.BatchStatus]


def _insert(conn, entity: str, entity_id: str, status: str) -> None:
    """Create a row as the tracker does: batches get their creation row from a trigger, items
    from `tracker enqueue` (emulated here)."""
    if entity == "item":
        conn.execute(text(
            "INSERT INTO items (id, provider, model, payload, status, created_at, updated_at) "
            "VALUES (:id, 'openai', 'gpt-4', '{}', :s, 1, 1)"), {"id": entity_id, "s": status})
        conn.execute(text(
            "INSERT INTO transitions (entity, entity_id, from_status, to_status, at) "
            "VALUES ('item', :id, NULL, :s, 1)"), {"id": entity_id, "s": status})
    else:
        conn.execute(text(
            "INSERT INTO batches (id, provider, model, endpoint, status, item_count, created_at, "
            "updated_at) VALUES (:id, 'openai', 'gpt-4', '/v1/chat/completions', :s, 0, 1, 1)"),
            {"id": entity_id, "s": status})


def _table(entity: str) -> str:
    return "items" if entity == "item" else "batches"


def _history(conn, entity_id: str) -> list[tuple]:
    return [tuple(r) for r in conn.execute(text(
        "SELECT from_status, to_status, reason FROM transitions WHERE entity_id = :id "
        "ORDER BY id"), {"id": entity_id})]


def test_allowed_transitions_table__matches_python_pair_by_pair(engine: Engine) -> None:
    with read(engine) as conn:
        rows = {(e, f, t) for e, f, t in conn.execute(text(
            "SELECT entity, from_status, to_status FROM allowed_transitions"))}
    expected = {("item", f, t) for f, t in states.allowed_pairs("item")} | {
        ("batch", f, t) for f, t in states.allowed_pairs("batch")}
    assert rows == expected


@pytest.mark.parametrize("entity,statuses", [("item", ITEM_STATUSES),
                                              ("batch", BATCH_STATUSES)])
def test_check_constraint__lists_exactly_the_python_statuses(engine: Engine, entity: str,
                                                              statuses: list[str]) -> None:
    with write(engine) as conn:
        for status in statuses:
            _insert(conn, entity, f"ok-{status}", status)
    with pytest.raises(IntegrityError), write(engine) as conn:
        _insert(conn, entity, "bad", "bogus")


@pytest.mark.parametrize("entity,statuses", [("item", ITEM_STATUSES),
                                              ("batch", BATCH_STATUSES)])
def test_transition__every_pair(engine: Engine, entity: str, statuses: list[str],
                                clock) -> None:
    allowed = states.allowed_pairs(entity)
    for n, (frm, to) in enumerate(itertools.product(statuses, statuses)):
        if frm == to:
            continue
        entity_id = f"{entity}-{n}"
        with write(engine) as conn:
            _insert(conn, entity, entity_id, frm)
        if (frm, to) in allowed:
            with write(engine) as conn:
                transitions.transition_many(conn, entity, [entity_id], frm, to, f"test {frm}->{to}",
                                  clock())
            with read(engine) as conn:
                assert _history(conn, entity_id) == [(None, frm, None),
                                                     (frm, to, f"test {frm}->{to}")]
        else:
            with pytest.raises(IllegalTransition, match=f"{frm} -> {to}"), \
                    write(engine) as conn:
                transitions.transition_many(conn, entity, [entity_id], frm, to, "nope", clock())
            # ...and the trigger refuses the same move from raw SQL
            with pytest.raises(IntegrityError, match=f"illegal {entity} transition"), \
                    write(engine) as conn:
                conn.execute(text(f"UPDATE {_table(entity)} SET status = :to WHERE id = :id"),
                             {"to": to, "id": entity_id})
            with read(engine) as conn:
                assert conn.execute(text(f"SELECT status FROM {_table(entity)} WHERE id = :id"),
                                    {"id": entity_id}).scalar() == frm
                assert _history(conn, entity_id) == [(None, frm, None)]


def test_transition__stale_row_loses_cleanly(engine: Engine, clock) -> None:
    with write(engine) as conn:
        _insert(conn, "item", "a", "queued")
    # Two workers both read 'queued'; the first moves it, the second must be told.
    with write(engine) as conn:
        transitions.transition_many(conn, "item", ["a"], "queued", "in_batch", "first", clock())
    with pytest.raises(StaleTransition, match="no longer queued"), write(engine) as conn:
        transitions.transition_many(conn, "item", ["a"], "queued", "cancelled", "second", clock())
    with read(engine) as conn:
        assert conn.execute(text("SELECT status FROM items WHERE id='a'")).scalar() == "in_batch"
        assert _history(conn, "a") == [(None, "queued", None), ("queued", "in_batch", "first")]


def test_transition_many__all_or_nothing(engine: Engine, clock) -> None:
    with write(engine) as conn:
        for i in range(3):
            _insert(conn, "item", f"m{i}", "queued")
        transitions.transition_many(conn, "item", ["m2"], "queued", "cancelled", "gone", clock())
    with pytest.raises(StaleTransition), write(engine) as conn:
        transitions.transition_many(conn, "item", ["m0", "m1", "m2"], "queued", "in_batch", "x",
                               clock())
    with read(engine) as conn:
        assert conn.execute(text(
            "SELECT count(*) FROM items WHERE status = 'queued'")).scalar() == 2


def test_transitions__append_only(engine: Engine) -> None:
    with write(engine) as conn:
        _insert(conn, "batch", "b", "pending")
    with pytest.raises(IntegrityError, match="append-only"), write(engine) as conn:
        conn.execute(text("DELETE FROM transitions"))
    with pytest.raises(IntegrityError, match="append-only"), write(engine) as conn:
        conn.execute(text("UPDATE transitions SET reason = 'edited'"))
