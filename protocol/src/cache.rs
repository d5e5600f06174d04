//! Redis key names and the revocation markers both sidecars read and write.
//!
//! - `session:{sha256 hex}`, `token:{sha256 hex}`, `user:{uuid}`: cache entries, written
//!   by the proxy only through [`FILL_SCRIPT`].
//! - A credential entry whose value is [`TOMBSTONE`] was revoked: the backend writes it
//!   (overwriting any entry) when a single session or token is revoked, and a fill can
//!   never replace it.
//! - `revoked_before:{user}` (Unix ms): every credential of the user created at or
//!   before it is revoked (logout-all, password change, disable, delete): one write,
//!   however many credentials the user has.
//! - `uver:{user}`: the user record's version, bumped on every change, so a `user:{id}`
//!   entry filled from a read older than the change is ignored.
//! - `client_revoked_before:{client}` (Unix ms): every token of the OAuth client created
//!   at or before it is revoked (client disabled, deleted, or its secret rotated). It
//!   also tells the proxies to forget the client's credentials they verified earlier:
//!   a proxy remembers the marker's value it saw when the backend accepted them, and
//!   any change makes them unverified again (docs/caching.md, "Client lifecycle").

use sha2::{Digest, Sha256};

pub const TOMBSTONE: &str = "revoked";

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

pub fn hex_digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub fn session_key(session_token: &str) -> String {
    format!("session:{}", hex_digest(session_token))
}

/// Access and refresh tokens share the `token:` namespace (introspection answers both).
pub fn token_key(token: &str) -> String {
    format!("token:{}", hex_digest(token))
}

/// The same key from a stored SHA-256 digest.
pub fn key_from_digest(prefix: &str, digest: &[u8]) -> String {
    format!("{prefix}:{}", hex(digest))
}

pub fn user_key(user_id: &uuid::Uuid) -> String {
    format!("user:{user_id}")
}

/// Whether `key` names a cache entry (`session:`, `token:`, `user:`) rather than one of
/// the markers an entry is checked against. A proxy's local tier drops just the entry
/// when an entry changes, and everything when a marker does (docs/caching.md, "The local tier").
pub fn is_entry_key(key: &str) -> bool {
    ["session:", "token:", "user:"].iter().any(|prefix| key.starts_with(prefix))
}

pub fn revoked_before_key(user_id: &str) -> String {
    format!("revoked_before:{user_id}")
}

pub fn user_version_key(user_id: &str) -> String {
    format!("uver:{user_id}")
}

pub fn client_revoked_before_key(client_id: &str) -> String {
    format!("client_revoked_before:{client_id}")
}

/// Sets `revoked_before:{user}` to the larger of its value and `ARGV[1]`, with TTL
/// `ARGV[2]` ms. KEYS[1] = the marker key.
pub const RAISE_REVOKED_BEFORE_SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then current = wanted end
redis.call('SET', KEYS[1], tostring(current), 'PX', ARGV[2])
return current
";

/// Like [`RAISE_REVOKED_BEFORE_SCRIPT`] for `client_revoked_before:{client}`, but the
/// value always moves (at least by 1 ms): proxies compare it for equality to decide
/// whether credentials they verified are still good, so every lifecycle change must
/// change it. KEYS[1] = the marker key; ARGV = at ms, TTL ms.
pub const RAISE_CLIENT_MARKER_SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then current = wanted else current = current + 1 end
redis.call('SET', KEYS[1], tostring(current), 'PX', ARGV[2])
return current
";

/// Reads one cache entry and checks it against the revocation markers, in one round
/// trip. KEYS[1] = entry key; ARGV[1] = the user id when the entry is a user record;
/// ARGV[2], ARGV[3] = the client whose remembered credentials authorize this read and
/// the `client_revoked_before` value seen when they were verified (empty when no client
/// credentials are involved). Returns `{status, value}`:
/// - `{"hit", body, pttl, user, client}`: a live entry, its remaining lifetime in ms (a
///   local copy must not outlive it), and the user and client whose markers it was
///   checked against ([`dependency_keys`]);
/// - `{"revoked", ""}`: a tombstone — the credential is revoked, no lookup needed;
/// - `{"miss", user_version}`: absent, or older than its user's or client's markers
///   (then only the backend can say), with the user version to fill against when the
///   entry is a user;
/// - `{"caller", ""}`: the calling client's marker moved since its credentials were
///   verified: they must be verified again before anything is answered.
///
/// Entries are stored as `{created_ms}|{user_id}|{user_version}|{client_id}|{body}`; the
/// first four fields may be empty. An entry in any other shape is a miss.
pub const LOOKUP_SCRIPT: &str = r"
local caller_marker
if ARGV[2] ~= '' then
  caller_marker = redis.call('GET', 'client_revoked_before:' .. ARGV[2])
  if (caller_marker or '0') ~= ARGV[3] then return {'caller', ''} end
end
local v = redis.call('GET', KEYS[1])
if not v then
  if ARGV[1] ~= '' then return {'miss', redis.call('GET', 'uver:' .. ARGV[1]) or '0'} end
  return {'miss', ''}
end
if v == 'revoked' then return {'revoked', ''} end
local created, user, version, client, body = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
if not body then return {'miss', ''} end
if user ~= '' then
  if created ~= '' then
    local rb = redis.call('GET', 'revoked_before:' .. user)
    if rb and tonumber(rb) >= tonumber(created) then return {'miss', ''} end
  end
  if version ~= '' then
    local current = redis.call('GET', 'uver:' .. user) or '0'
    if current ~= version then return {'miss', current} end
  end
end
if client ~= '' and created ~= '' then
  -- A client introspecting its own token: its marker was read above.
  local crb
  if client == ARGV[2] then crb = caller_marker else crb = redis.call('GET', 'client_revoked_before:' .. client) end
  if crb and tonumber(crb) >= tonumber(created) then return {'miss', ''} end
end
return {'hit', body, tostring(redis.call('PTTL', KEYS[1])), user, client}
";

/// Every key a [`LOOKUP_SCRIPT`] hit on `entry_key` was judged by: the entry, its user's
/// marker and version, its client's marker and the calling client's marker. Redis 7.0
/// tracks, for client-side caching, only the keys a script declares, so a read whose
/// answer is to be kept locally runs the script again with all of them declared
/// (docs/caching.md, "The local tier").
pub fn dependency_keys(entry_key: &str, user: &str, client: &str, caller: Option<&str>) -> Vec<String> {
    let mut keys = vec![entry_key.to_string()];
    if !user.is_empty() {
        keys.push(revoked_before_key(user));
        keys.push(user_version_key(user));
    }
    for client in [Some(client), caller].into_iter().flatten().filter(|c| !c.is_empty()) {
        keys.push(client_revoked_before_key(client));
    }
    keys.dedup(); // a client introspecting its own token
    keys
}

/// Writes a cache entry unless a revocation happened since the data was read: not over
/// a tombstone, not for a credential at or before its user's or its client's
/// `revoked_before`, and not for a user record whose version moved. KEYS[1] = entry
/// key; ARGV = value (entry format as in [`LOOKUP_SCRIPT`]), TTL ms, user id, created
/// ms, user version, client id.
pub const FILL_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == 'revoked' then return 0 end
if ARGV[3] ~= '' then
  if ARGV[4] ~= '' then
    local rb = redis.call('GET', 'revoked_before:' .. ARGV[3])
    if rb and tonumber(rb) >= tonumber(ARGV[4]) then return 0 end
  end
  if ARGV[5] ~= '' then
    local current = redis.call('GET', 'uver:' .. ARGV[3]) or '0'
    if current ~= ARGV[5] then return 0 end
  end
end
if ARGV[6] ~= '' and ARGV[4] ~= '' then
  local crb = redis.call('GET', 'client_revoked_before:' .. ARGV[6])
  if crb and tonumber(crb) >= tonumber(ARGV[4]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Formats a cache entry for [`FILL_SCRIPT`] / [`LOOKUP_SCRIPT`].
pub fn entry(created_ms: Option<i64>, user_id: Option<&str>, user_version: Option<&str>, client_id: Option<&str>, body: &str) -> String {
    format!(
        "{}|{}|{}|{}|{body}",
        created_ms.map(|c| c.to_string()).unwrap_or_default(),
        user_id.unwrap_or_default(),
        user_version.unwrap_or_default(),
        client_id.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_digests_never_secrets() {
        let key = session_key("qst_secret");
        assert!(key.starts_with("session:") && !key.contains("secret"));
        assert_eq!(key.len(), "session:".len() + 64);
        assert_eq!(token_key("abc"), "token:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let digest = Sha256::digest(b"abc");
        assert_eq!(key_from_digest("token", &digest), token_key("abc"));
    }

    #[test]
    fn entry_keys_are_told_from_markers() {
        let user = uuid::Uuid::nil();
        for key in [session_key("s"), token_key("t"), user_key(&user)] {
            assert!(is_entry_key(&key), "{key}");
        }
        for key in [revoked_before_key("u"), user_version_key("u"), client_revoked_before_key("c")] {
            assert!(!is_entry_key(&key), "{key}");
        }
    }

    #[test]
    fn entry_format() {
        assert_eq!(entry(Some(5), Some("u"), None, None, "{\"a\":1}"), "5|u|||{\"a\":1}");
        assert_eq!(entry(Some(5), None, None, Some("c"), "{}"), "5|||c|{}");
        assert_eq!(entry(None, None, None, None, "x|y"), "||||x|y");
    }
}
