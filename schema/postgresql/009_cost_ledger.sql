-- 009: the cost ledger and budgets. The provider bills every request it ran: the lines kept
-- from completed, expired and cancelled batches, and those of duplicate provider batches that
-- ran before they were cancelled (kept here as waste; their results are discarded). One row
-- per billed line, written in the transaction that closes its batch, so a re-run adds nothing.
-- Amounts are not stored: `tracker cost` prices the tokens with the config's price table.

ALTER TABLE items ADD COLUMN cached_tokens INTEGER;     -- of prompt_tokens, read from cache
ALTER TABLE items ADD COLUMN reasoning_tokens INTEGER;  -- of completion_tokens

CREATE TABLE usage_ledger (
    batch_id          TEXT NOT NULL REFERENCES batches (id),  -- the batch that ran the line
    item_id           TEXT NOT NULL,             -- the line's custom_id
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    job               TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('result', 'waste')),
    prompt_tokens     INTEGER,  -- including cached_tokens; NULL: the line gave no usage
    completion_tokens INTEGER,  -- including reasoning_tokens
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens  INTEGER NOT NULL DEFAULT 0,
    billed_at         DOUBLE PRECISION NOT NULL,  -- when the batch ended (else when it was closed)
    PRIMARY KEY (batch_id, item_id)
);
CREATE INDEX usage_ledger_job ON usage_ledger (job);

INSERT INTO usage_ledger (batch_id, item_id, provider, model, job, kind, prompt_tokens,
                          completion_tokens, billed_at)
SELECT i.batch_id, i.id, i.provider, i.model, i.job, 'result', i.prompt_tokens,
       i.completion_tokens, COALESCE(b.ended_at, i.finished_at, i.updated_at)
FROM items i JOIN batches b ON b.id = i.batch_id
WHERE i.status = 'succeeded';

-- Budgets: a job's own limit (`tracker enqueue --budget-usd`), beside the config's
-- batch.budget_usd for the whole database. Decimal strings, never floats.
CREATE TABLE jobs (
    name       TEXT PRIMARY KEY,
    budget_usd TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
-- The worst case a batch may cost, held against the budget from the moment it may be sent
-- until it is closed (then the ledger holds what it cost); and why a batch waits for budget.
ALTER TABLE batches ADD COLUMN budget_hold_usd TEXT;
ALTER TABLE batches ADD COLUMN budget_wait TEXT;
