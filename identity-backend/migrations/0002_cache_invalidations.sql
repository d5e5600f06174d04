-- Cache invalidations that could not be written to Redis when the revocation happened
-- (Redis down or unreachable). The backend retries them until Redis accepts them.
CREATE TABLE cache_invalidations (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,     -- 'tombstone' | 'revoked_before' | 'user_changed'
    key         text NOT NULL,     -- the cache key, or the user id
    value       bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
