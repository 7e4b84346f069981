-- 007: provider files to delete. Once a batch is ingested its input, output and error files
-- at the provider are no longer needed (they count against the account's storage); each gets
-- a row here, deleted by the daemon's delete_files step and kept as a record of it. A failed
-- delete is tried again later (due_at, attempts, last_error) and never holds anything up. A
-- worker claims a row by moving its due_at past the claim; a delete sent twice is harmless
-- (the second answers 404, which counts as deleted).

CREATE TABLE file_deletions (
    provider   TEXT NOT NULL,
    file_id    TEXT NOT NULL,
    batch_id   TEXT NOT NULL REFERENCES batches (id),
    kind       TEXT NOT NULL CHECK (kind IN ('input', 'output', 'error')),
    created_at REAL NOT NULL,
    due_at     REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    deleted_at REAL,
    PRIMARY KEY (provider, file_id)
);
CREATE INDEX file_deletions_due ON file_deletions (due_at) WHERE deleted_at IS NULL;
