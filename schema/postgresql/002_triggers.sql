-- 002: the database enforces the state machine and writes the audit trail itself (the
-- PL/pgSQL twin of schema/sqlite/002_triggers.sql).
-- Guards refuse a status change that is not a row of allowed_transitions, even from raw SQL.
-- History triggers insert one transitions row per status change (and per batch creation), in
-- the same transaction as the change; the reason is the row's status_reason. Item creation
-- rows are written by `tracker enqueue` (the only code that creates items), as on SQLite.

CREATE FUNCTION tracker_guard_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
        SELECT 1 FROM allowed_transitions
        WHERE entity = TG_ARGV[0] AND from_status = OLD.status AND to_status = NEW.status)
    THEN
        RAISE EXCEPTION 'illegal % transition', TG_ARGV[0]
            USING ERRCODE = 'check_violation',
                  DETAIL = format('%s %s: %s -> %s', TG_ARGV[0], OLD.id, OLD.status,
                                  NEW.status);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER items_guard BEFORE UPDATE OF status ON items
FOR EACH ROW EXECUTE FUNCTION tracker_guard_status('item');

CREATE TRIGGER batches_guard BEFORE UPDATE OF status ON batches
FOR EACH ROW EXECUTE FUNCTION tracker_guard_status('batch');

-- `at` is the row's new updated_at; a raw UPDATE that leaves updated_at alone gets the clock.
CREATE FUNCTION tracker_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO transitions (entity, entity_id, from_status, to_status, at, reason)
        VALUES (TG_ARGV[0], NEW.id, NULL, NEW.status, NEW.created_at, NEW.status_reason);
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO transitions (entity, entity_id, from_status, to_status, at, reason)
        VALUES (TG_ARGV[0], NEW.id, OLD.status, NEW.status,
                CASE WHEN NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
                     THEN extract(epoch FROM clock_timestamp()) ELSE NEW.updated_at END,
                NEW.status_reason);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER batches_created AFTER INSERT ON batches
FOR EACH ROW EXECUTE FUNCTION tracker_record_transition('batch');

CREATE TRIGGER items_history AFTER UPDATE OF status ON items
FOR EACH ROW EXECUTE FUNCTION tracker_record_transition('item');

CREATE TRIGGER batches_history AFTER UPDATE OF status ON batches
FOR EACH ROW EXECUTE FUNCTION tracker_record_transition('batch');

-- The audit trail is append-only.
CREATE FUNCTION tracker_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transitions are append-only' USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER transitions_no_update BEFORE UPDATE ON transitions
FOR EACH ROW EXECUTE FUNCTION tracker_append_only();
CREATE TRIGGER transitions_no_delete BEFORE DELETE ON transitions
FOR EACH ROW EXECUTE FUNCTION tracker_append_only();
