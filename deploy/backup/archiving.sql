-- Turns on continuous WAL archiving into the pgBackRest repository. Run as a superuser by
-- deploy/backup/backup.sh init (docs/operations/backup-restore.md), with the psql variable
-- archive_command set. archive_mode takes effect at the next restart.
ALTER SYSTEM SET wal_level = 'replica';
ALTER SYSTEM SET archive_mode = 'on';
ALTER SYSTEM SET archive_command = :'archive_command';
-- The recovery point objective: a quiet server still ships its WAL at least once a minute.
ALTER SYSTEM SET archive_timeout = '60s';
ALTER SYSTEM SET max_wal_senders = 3;
SELECT pg_reload_conf();
