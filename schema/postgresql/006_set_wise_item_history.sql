-- 006: the item guard and history run once per statement, not once per row. Packing and
-- ingest move thousands of items in one UPDATE, and a PL/pgSQL call per row cost more than the
-- UPDATE itself. The rules are 002's: a status change that is not a row of allowed_transitions
-- is refused (the whole statement fails), and every status change gets one transitions row in
-- the same transaction, `at` the row's new updated_at (the clock when a raw UPDATE leaves
-- updated_at alone). Transition tables cannot be combined with a column list, so this fires
-- on every UPDATE of items and looks only at the rows whose status changed.

DROP TRIGGER items_guard ON items;
DROP TRIGGER items_history ON items;

-- The transition tables have no index: old and new rows are matched by a hash join (a nested
-- loop would compare every pair).
CREATE FUNCTION tracker_item_moves() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off AS $$
DECLARE
    illegal RECORD;
BEGIN
    SELECT o.id, o.status AS from_status, n.status AS to_status INTO illegal
    FROM moved_from o JOIN moved_to n ON n.id = o.id
    WHERE n.status IS DISTINCT FROM o.status AND NOT EXISTS (
        SELECT 1 FROM allowed_transitions a
        WHERE a.entity = 'item' AND a.from_status = o.status AND a.to_status = n.status)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'illegal item transition'
            USING ERRCODE = 'check_violation',
                  DETAIL = format('item %s: %s -> %s', illegal.id, illegal.from_status,
                                  illegal.to_status);
    END IF;
    INSERT INTO transitions (entity, entity_id, from_status, to_status, at, reason)
    SELECT 'item', n.id, o.status, n.status,
           CASE WHEN n.updated_at IS NOT DISTINCT FROM o.updated_at
                THEN extract(epoch FROM clock_timestamp()) ELSE n.updated_at END,
           n.status_reason
    FROM moved_from o JOIN moved_to n ON n.id = o.id
    WHERE n.status IS DISTINCT FROM o.status
    ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER items_moves AFTER UPDATE ON items
REFERENCING OLD TABLE AS moved_from NEW TABLE AS moved_to
FOR EACH STATEMENT EXECUTE FUNCTION tracker_item_moves();
