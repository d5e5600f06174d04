-- QuantaID schema, version 1.
-- Bearer secrets (sessions, tokens, client secrets, MFA challenges) are stored only as
-- SHA-256 digests; the raw value is shown to its owner once and never kept.

CREATE TABLE users (
    id            uuid PRIMARY KEY,              -- UUIDv7: carries its creation time
    username      text NOT NULL,                 -- stored lower-cased
    email         text NOT NULL,                 -- stored lower-cased
    password_hash text NOT NULL,                 -- argon2id PHC string
    disabled      boolean NOT NULL DEFAULT false,
    mfa_enabled   boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
-- The index names docs/design.md requires; unique, because they also enforce the identity rules.
CREATE UNIQUE INDEX idx_users_username ON users(username);
CREATE UNIQUE INDEX idx_users_email ON users(email);
CREATE INDEX idx_users_created_at ON users(created_at DESC);

CREATE TABLE user_totp (
    user_id         uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret          bytea NOT NULL,
    confirmed       boolean NOT NULL DEFAULT false,
    -- Highest TOTP time step accepted so far: a code at or below it is a replay.
    last_used_step  bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL
);

CREATE TABLE sessions (
    id            uuid PRIMARY KEY,
    token_digest  bytea NOT NULL,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    mfa_verified  boolean NOT NULL,
    ip_address    inet,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE UNIQUE INDEX idx_sessions_token_digest ON sessions(token_digest);
CREATE INDEX idx_sessions_user_active ON sessions(user_id) WHERE revoked_at IS NULL;

-- A login with MFA enrolled yields a short-lived, single-use challenge, not a session.
CREATE TABLE mfa_challenges (
    token_digest  bytea PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    failures      integer NOT NULL DEFAULT 0   -- wrong codes so far; the challenge dies at 5
);

CREATE TABLE oauth_clients (
    client_id      text PRIMARY KEY,
    secret_digest  bytea NOT NULL,
    name           text NOT NULL,
    grant_types    text[] NOT NULL,
    scopes         text[] NOT NULL,
    redirect_uris  text[] NOT NULL,
    created_at     timestamptz NOT NULL
);

-- One row per issuance. access_token and refresh_token hold SHA-256 digests.
CREATE TABLE oauth_tokens (
    id                  uuid PRIMARY KEY,
    access_token        bytea NOT NULL,
    refresh_token       bytea,
    -- Every token issued from one original grant shares a family; reuse of a rotated
    -- refresh token revokes the whole family.
    family_id           uuid NOT NULL,
    client_id           text NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    user_id             uuid REFERENCES users(id) ON DELETE CASCADE,
    scope               text NOT NULL,
    grant_type          text NOT NULL,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    refresh_expires_at  timestamptz,
    refresh_rotated_at  timestamptz,
    revoked             boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX idx_oauth_tokens_access_token ON oauth_tokens(access_token);
CREATE UNIQUE INDEX idx_oauth_tokens_refresh_token ON oauth_tokens(refresh_token);
CREATE INDEX idx_oauth_tokens_expires_at ON oauth_tokens(expires_at) WHERE revoked = false;
CREATE INDEX idx_oauth_tokens_family ON oauth_tokens(family_id);
CREATE INDEX idx_oauth_tokens_user_active ON oauth_tokens(user_id) WHERE revoked = false;

CREATE TABLE audit_logs (
    id          uuid PRIMARY KEY,
    user_id     uuid,                -- no foreign key: the trail outlives deleted users
    action      text NOT NULL,
    ip_address  inet,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL
);
CREATE INDEX idx_audit_logs_user_action ON audit_logs(user_id, action, created_at DESC);
CREATE INDEX idx_audit_logs_ip ON audit_logs(ip_address, created_at DESC);
CREATE INDEX idx_audit_logs_created_at ON audit_logs(created_at DESC);

-- Failed-login counters, shared by every replica (per account and per IP).
CREATE TABLE login_throttle (
    key               text PRIMARY KEY,
    failures          integer NOT NULL,
    window_started_at timestamptz NOT NULL
);
