//! Bearer secrets and their self-describing format (see `docs/token-format.md`).
//!
//! `<prefix>_<base64url(issued_at_ms:6 | random:24 | crc32:4)>`
//!
//! - the prefix names the kind (`qst` session, `qat` access, `qrt` refresh, `qmt` MFA
//!   challenge, `qcs` client secret);
//! - `issued_at_ms` lets the proxy's Bloom filter answer "absent" only for keys older
//!   than its watermark (docs/design.md, invariant 1);
//! - the CRC-32 over prefix and payload rejects typos and garbage before any lookup.
//!   It is a checksum, not a signature: the database digest lookup is what authenticates.
//!
//! Only `sha256(token)` is stored or used as a cache key.
//!
//! A token stamped further in the future than [`MAX_CLOCK_SKEW_MS`] was not issued by
//! any backend: [`parse`] refuses it like a bad checksum, so it costs no lookup
//! anywhere (docs/security.md, "Forged tokens").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const TIMESTAMP_LEN: usize = 6;
const RANDOM_LEN: usize = 24;
const CHECKSUM_LEN: usize = 4;
const PAYLOAD_LEN: usize = TIMESTAMP_LEN + RANDOM_LEN + CHECKSUM_LEN;
/// base64url without padding of 34 bytes.
const ENCODED_LEN: usize = 46;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    Access,
    Refresh,
    MfaChallenge,
    ClientSecret,
}

impl TokenKind {
    pub const ALL: [TokenKind; 5] =
        [TokenKind::Session, TokenKind::Access, TokenKind::Refresh, TokenKind::MfaChallenge, TokenKind::ClientSecret];

    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Session => "qst",
            TokenKind::Access => "qat",
            TokenKind::Refresh => "qrt",
            TokenKind::MfaChallenge => "qmt",
            TokenKind::ClientSecret => "qcs",
        }
    }
}

/// A well-formed token's visible facts. Well-formed is not valid: only the database knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub kind: TokenKind,
    pub issued_at: DateTime<Utc>,
}

fn checksum(prefix: &str, body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix.as_bytes());
    h.update(body);
    h.finalize().to_be_bytes()
}

/// A new token of `kind`, stamped with `now`, from the OS CSPRNG.
pub fn generate(kind: TokenKind, now: DateTime<Utc>) -> String {
    let mut payload = [0u8; PAYLOAD_LEN];
    let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    payload[..TIMESTAMP_LEN].copy_from_slice(&millis.to_be_bytes()[8 - TIMESTAMP_LEN..]);
    OsRng.fill_bytes(&mut payload[TIMESTAMP_LEN..TIMESTAMP_LEN + RANDOM_LEN]);
    let sum = checksum(kind.prefix(), &payload[..TIMESTAMP_LEN + RANDOM_LEN]);
    payload[TIMESTAMP_LEN + RANDOM_LEN..].copy_from_slice(&sum);
    format!("{}_{}", kind.prefix(), URL_SAFE_NO_PAD.encode(payload))
}

/// How far ahead of the reader's clock a token's stamp may be: the clock difference
/// tolerated between the backend that issued it and the sidecar that reads it.
pub const MAX_CLOCK_SKEW_MS: i64 = 30_000;

/// Parses a token's format; `None` for anything malformed, with a bad checksum, or
/// stamped more than [`MAX_CLOCK_SKEW_MS`] after now.
pub fn parse(token: &str) -> Option<TokenInfo> {
    parse_at(token, Utc::now())
}

/// [`parse`] against a given clock.
pub fn parse_at(token: &str, now: DateTime<Utc>) -> Option<TokenInfo> {
    parse_format(token).filter(|info| info.issued_at.timestamp_millis() <= now.timestamp_millis().saturating_add(MAX_CLOCK_SKEW_MS))
}

fn parse_format(token: &str) -> Option<TokenInfo> {
    let (prefix, encoded) = token.split_once('_')?;
    let kind = TokenKind::ALL.into_iter().find(|k| k.prefix() == prefix)?;
    if encoded.len() != ENCODED_LEN {
        return None;
    }
    let payload = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let (body, sum) = payload.split_at(TIMESTAMP_LEN + RANDOM_LEN);
    if !bool::from(checksum(prefix, body).ct_eq(sum)) {
        return None;
    }
    let mut millis = [0u8; 8];
    millis[8 - TIMESTAMP_LEN..].copy_from_slice(&body[..TIMESTAMP_LEN]);
    let issued_at = Utc.timestamp_millis_opt(i64::try_from(u64::from_be_bytes(millis)).ok()?).single()?;
    Some(TokenInfo { kind, issued_at })
}

/// Parses and checks the kind in one step.
pub fn parse_kind(token: &str, kind: TokenKind) -> Option<TokenInfo> {
    parse(token).filter(|info| info.kind == kind)
}

/// SHA-256 of a bearer secret: the only form that is stored or used as a key.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Constant-time equality of two digests.
pub fn digests_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A UUIDv7 for `now`: time-ordered, and carries its creation time like the tokens do.
pub fn new_id(now: DateTime<Utc>) -> uuid::Uuid {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, u64::try_from(now.timestamp()).unwrap_or(0), now.timestamp_subsec_nanos());
    uuid::Uuid::new_v7(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    #[test]
    fn round_trips_kind_and_time() {
        for kind in TokenKind::ALL {
            let t = generate(kind, at(1_780_000_000_123));
            assert_eq!(t.len(), kind.prefix().len() + 1 + ENCODED_LEN);
            assert_eq!(parse(&t), Some(TokenInfo { kind, issued_at: at(1_780_000_000_123) }));
        }
    }

    #[test]
    fn tokens_are_unique() {
        let a = generate(TokenKind::Access, at(0));
        let b = generate(TokenKind::Access, at(0));
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_tampering_and_garbage() {
        let t = generate(TokenKind::Session, Utc::now());
        // One changed character in the payload breaks the checksum.
        let mut chars: Vec<char> = t.chars().collect();
        let i = 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        assert_eq!(parse(&chars.into_iter().collect::<String>()), None);
        // Same payload under another kind's prefix fails too.
        assert_eq!(parse(&t.replacen("qst", "qat", 1)), None);
        for garbage in ["", "qst_", "qst_short", "nope", "qst_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", "\u{0}"] {
            assert_eq!(parse(garbage), None, "{garbage:?}");
        }
        assert!(parse_kind(&t, TokenKind::Access).is_none());
        assert!(parse_kind(&t, TokenKind::Session).is_some());
    }

    #[test]
    fn tokens_from_the_future_are_refused() {
        let now = at(1_780_000_000_000);
        let within = generate(TokenKind::Access, at(1_780_000_000_000 + MAX_CLOCK_SKEW_MS));
        assert!(parse_at(&within, now).is_some(), "clock skew is tolerated");
        let ahead = generate(TokenKind::Access, at(1_780_000_000_000 + MAX_CLOCK_SKEW_MS + 1));
        assert_eq!(parse_at(&ahead, now), None);
        let next_year = generate(TokenKind::Session, Utc::now() + chrono::Duration::days(365));
        assert_eq!(parse(&next_year), None);
    }

    #[test]
    fn ids_carry_their_time() {
        let id = new_id(at(1_780_000_000_123));
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_780_000_000, 123));
    }

    #[test]
    fn digest_comparison() {
        assert!(digests_match(&digest("a"), &digest("a")));
        assert!(!digests_match(&digest("a"), &digest("b")));
        assert!(!digests_match(&digest("a"), &[]));
    }
}
