-- 003: audit views (the twin of schema/sqlite/003_views.sql, with the same columns). Times are
-- shown as UTC text ('YYYY-MM-DD HH:MM:SS', as SQLite's datetime()); *_seconds columns are ages.

CREATE FUNCTION tracker_utc_text(epoch DOUBLE PRECISION) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(to_timestamp(epoch) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
$$;

CREATE VIEW batch_summary AS
SELECT b.id,
       b.provider_batch_id,
       b.provider,
       b.model,
       b.status,
       b.provider_status,
       b.item_count,
       (SELECT count(*) FROM items i WHERE i.batch_id = b.id AND i.status = 'succeeded')
           AS succeeded,
       (SELECT count(*) FROM items i WHERE i.batch_id = b.id AND i.status = 'failed') AS failed,
       (SELECT count(*) FROM items i WHERE i.batch_id = b.id AND i.status = 'cancelled')
           AS cancelled,
       (SELECT count(*) FROM items i WHERE i.batch_id = b.id AND i.status = 'in_batch')
           AS in_flight,
       b.requeued_count AS requeued,
       b.last_error,
       tracker_utc_text(b.created_at) AS created,
       tracker_utc_text(b.submitted_at) AS submitted,
       tracker_utc_text(b.ended_at) AS ended,
       tracker_utc_text(b.ingested_at) AS ingested
FROM batches b;

CREATE VIEW item_history AS
SELECT t.entity_id AS item_id,
       t.id AS seq,
       t.from_status,
       t.to_status,
       tracker_utc_text(t.at) AS at,
       t.reason,
       i.status AS current_status,
       i.attempts
FROM transitions t
JOIN items i ON i.id = t.entity_id
WHERE t.entity = 'item';

CREATE VIEW batch_history AS
SELECT t.entity_id AS batch_id,
       t.id AS seq,
       t.from_status,
       t.to_status,
       tracker_utc_text(t.at) AS at,
       t.reason
FROM transitions t
WHERE t.entity = 'batch';

-- Items in a batch that has been open for more than 25 hours (the provider's window is 24 h).
CREATE VIEW stuck_items AS
SELECT i.id AS item_id,
       i.batch_id,
       b.provider_batch_id,
       b.status AS batch_status,
       b.provider_status,
       extract(epoch FROM now())::double precision - b.created_at AS open_seconds,
       b.last_error
FROM items i
JOIN batches b ON b.id = i.batch_id
WHERE i.status = 'in_batch'
  AND b.status <> 'ingested'
  AND extract(epoch FROM now())::double precision - b.created_at > 25 * 3600;
