-- 004: fencing tokens on the lease, and what the tracker needs to wait out a provider that is
-- eventually consistent (files after the status, 404s after create, a list that lags).

-- Every acquire of the lease takes the next token; every write a step makes checks it in the
-- same transaction, so a daemon paused past its lease cannot write once another has taken over.
ALTER TABLE daemon_lease ADD COLUMN token INTEGER NOT NULL DEFAULT 0;

-- The uploaded input file's created_at, by the provider's clock: reconcile and the duplicate
-- sweep look for provider batches created after it, so a wrong local clock cannot hide one.
ALTER TABLE batches ADD COLUMN input_file_created_at BIGINT;
-- When the provider last answered well about this batch (local time): a 404 is a delay until
-- the grace period after it has passed.
ALTER TABLE batches ADD COLUMN last_seen_at DOUBLE PRECISION;
-- When a step first found the batch's results not (yet) downloadable (a file promised by the
-- counts but not named, or a 404 on a file): the wait is bounded by the grace period.
ALTER TABLE batches ADD COLUMN results_missing_since DOUBLE PRECISION;
-- 1 when the tracker cancelled the batch itself because it answered 404 past the grace period
-- (not because anyone asked): its unfinished lines go back to the queue rather than ending
-- `cancelled`.
ALTER TABLE batches ADD COLUMN requeue_unfinished INTEGER NOT NULL DEFAULT 0
    CHECK (requeue_unfinished IN (0, 1));
