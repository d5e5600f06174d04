-- When a session last presented the password or a TOTP code again (NULL: only at its
-- creation). Sensitive changes need this, or the creation, to be recent.
ALTER TABLE sessions ADD COLUMN authenticated_at timestamptz;
