-- 002: the database enforces the state machine and writes the audit trail itself.
-- Guards refuse a status change that is not a row of allowed_transitions, even from raw SQL
-- (RAISE(ABORT), not ROLLBACK, so the caller's transaction survives to roll back cleanly).
-- History triggers insert one transitions row per status change (and per batch creation), in
-- the same transaction as the change; the reason is the row's status_reason. Item creation
-- rows are written by `tracker enqueue` (the only code that creates items) with one
-- executemany per chunk in the same transaction: a per-row trigger tripled enqueue time.

CREATE TRIGGER items_guard BEFORE UPDATE OF status ON items
WHEN OLD.status IS NOT NEW.status AND NOT EXISTS (
    SELECT 1 FROM allowed_transitions
    WHERE entity = 'item' AND from_status = OLD.status AND to_status = NEW.status)
BEGIN
    SELECT RAISE(ABORT, 'illegal item transition');
END;

CREATE TRIGGER batches_guard BEFORE UPDATE OF status ON batches
WHEN OLD.status IS NOT NEW.status AND NOT EXISTS (
    SELECT 1 FROM allowed_transitions
    WHERE entity = 'batch' AND from_status = OLD.status AND to_status = NEW.status)
BEGIN
    SELECT RAISE(ABORT, 'illegal batch transition');
END;

CREATE TRIGGER batches_created AFTER INSERT ON batches
BEGIN
    INSERT INTO transitions (entity, entity_id, from_status, to_status, at, reason)
    VALUES ('batch', NEW.id, NULL, NEW.status, NEW.created_at, NEW.status_reason);
END;

CREATE TRIGGER items_history AFTER UPDATE OF status ON items
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO transitions (entity, entity_id, from_status, to_status, at, reason)
    VALUES ('item', NEW.id, OLD.status, NEW.status,
            CASE WHEN NEW.updated_at IS OLD.updated_at
                 THEN (julianday('now') - 2440587.5) * 86400.0 ELSE NEW.updated_at END,
            NEW.status_reason);
END;

CREATE TRIGGER batches_history AFTER UPDATE OF status ON batches
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO transitions (entity, entity_id, from_status, to_status, at, reason)
    VALUES ('batch', NEW.id, OLD.status, NEW.status,
            CASE WHEN NEW.updated_at IS OLD.updated_at
                 THEN (julianday('now') - 2440587.5) * 86400.0 ELSE NEW.updated_at END,
            NEW.status_reason);
END;

-- The audit trail is append-only.
CREATE TRIGGER transitions_no_update BEFORE UPDATE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;
CREATE TRIGGER transitions_no_delete BEFORE DELETE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;
