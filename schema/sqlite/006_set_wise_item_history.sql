-- 006: nothing changes on SQLite. On PostgreSQL the item guard and history moved from a
-- PL/pgSQL call per row to one per statement; SQLite's triggers run in the writing process
-- and cost little per row. Kept so both engines count the same migrations.
SELECT 1;
