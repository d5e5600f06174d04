-- The proxy's Bloom filter catches up every few seconds with the credentials and users
-- created since its last snapshot; these keep that catch-up an index range scan.
CREATE INDEX idx_sessions_created_at ON sessions(created_at);
CREATE INDEX idx_oauth_tokens_created_at ON oauth_tokens(created_at);
