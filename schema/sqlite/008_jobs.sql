-- 008: jobs. Every item belongs to a job (`tracker enqueue FILE --job NAME`, by default the
-- file's name without its extension), and may carry the caller's own `metadata` object, kept
-- as given and returned with its result, so outputs can be joined back to the caller's rows.
-- Items and batches from before this migration belong to the job 'default'.

ALTER TABLE items ADD COLUMN job TEXT NOT NULL DEFAULT 'default';
ALTER TABLE items ADD COLUMN metadata TEXT;
-- A batch holds the items of one job (pack groups by job), so a job can be cancelled alone.
ALTER TABLE batches ADD COLUMN job TEXT NOT NULL DEFAULT 'default';
