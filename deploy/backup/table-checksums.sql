-- One line per table of the public schema: "table|row count|MD5 of its rows in a fixed
-- order". Run before a backup and after its restore: identical output, identical data.
-- Used by the restore drill (docs/operations/backup-restore.md) and deploy/backup/test.sh.
SELECT format('SELECT %L, count(*), md5(coalesce(string_agg(t::text, E''\n'' ORDER BY t::text), '''')) FROM %I.%I t',
              table_name, table_schema, table_name)
  FROM information_schema.tables
 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
 ORDER BY table_name \gexec
