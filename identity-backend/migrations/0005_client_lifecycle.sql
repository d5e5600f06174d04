-- OAuth clients can be disabled (and enabled again). A disabled client cannot
-- authenticate; disabling it also revokes every token it holds.
ALTER TABLE oauth_clients ADD COLUMN disabled boolean NOT NULL DEFAULT false;
