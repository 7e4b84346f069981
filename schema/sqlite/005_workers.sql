-- 005: many workers. Each `tracker run` is a worker with a row in `workers`, renewed by its
-- heartbeat. A worker claims the batches it handles (a per-row lease): `claimed_by` names it,
-- `claim_expires_at` is renewed with its heartbeat, and `claim_token` grows on every claim, so a
-- worker paused past its claim cannot write once another has taken the batch over (each write
-- checks the holder and the token in its own transaction). On SQLite one daemon holds the
-- single-writer lease and claims everything; on PostgreSQL any number of workers share the work.

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,                 -- host:pid:process start:pid namespace:random
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    expires_at   REAL NOT NULL                     -- past this, its claims may be taken over
);

ALTER TABLE batches ADD COLUMN claimed_by TEXT;    -- the worker handling the batch, if any
ALTER TABLE batches ADD COLUMN claim_token INTEGER NOT NULL DEFAULT 0;  -- +1 on every claim
ALTER TABLE batches ADD COLUMN claim_expires_at REAL;
ALTER TABLE batches ADD COLUMN claim_heartbeat_at REAL;
CREATE INDEX batches_claimed ON batches (claimed_by) WHERE claimed_by IS NOT NULL;
