-- 010: providers whose batches take their requests inline and carry no metadata (Anthropic).
-- An item is sent under a custom_id the provider accepts; when that differs from the item's
-- id it is stored here before the create, and result lines are joined back by it:
--   SELECT i.id FROM items i WHERE COALESCE(i.custom_id, i.id) = :line_custom_id
-- With no input file to date a create by, the provider's clock is read just before the
-- first create: a batch the lost answer hid was created at or after that time, and holds as
-- many requests as the last create sent (kept with its intent).

ALTER TABLE items ADD COLUMN custom_id TEXT;  -- NULL: sent under its own id
ALTER TABLE batches ADD COLUMN provider_time_at_intent INTEGER;  -- epoch s, provider's clock
ALTER TABLE batches ADD COLUMN sent_request_count INTEGER;  -- requests in the last create
