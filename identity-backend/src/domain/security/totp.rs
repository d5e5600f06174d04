//! TOTP (RFC 6238) over HMAC-SHA1, 6 digits, 30 s steps: what authenticator apps use.
//!
//! Time is passed in, so tests use the RFC's vectors and fixed clocks.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

pub const STEP_SECS: u64 = 30;
pub const DIGITS: u32 = 6;
/// Steps of clock drift accepted either side of now.
pub const SKEW_STEPS: u64 = 1;
pub const SECRET_LEN: usize = 20;

/// HOTP (RFC 4226) value of `counter`, truncated to `digits`.
// HMAC takes a key of any length (RFC 2104); `new_from_slice` returns a `Result` only
// because the `Mac` trait also serves fixed-key MACs, so the `expect` cannot fire.
#[allow(clippy::expect_used)]
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([hash[offset] & 0x7f, hash[offset + 1], hash[offset + 2], hash[offset + 3]]);
    binary % 10u32.pow(digits)
}

pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The step whose code matches `code` within the skew window and is newer than
/// `last_used_step`; `None` otherwise. The caller must record the returned step
/// atomically so the same code cannot be used twice (replay protection).
pub fn verify(secret: &[u8], code: &str, unix_secs: u64, last_used_step: u64) -> Option<u64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(unix_secs);
    let mut matched = None;
    // Check every candidate step so the time taken does not depend on which matched.
    for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
        let expected = format!("{:0width$}", hotp(secret, step, DIGITS), width = DIGITS as usize);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && step > last_used_step {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://` URI authenticator apps scan.
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    let enc = |s: &str| serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').to_string();
    format!(
        "otpauth://totp/{}:{}?secret={secret_base32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_sha1_vectors() {
        for (time, expected) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(RFC_SECRET, step_at(time), 8), expected, "t={time}");
        }
    }

    #[test]
    fn accepts_current_and_adjacent_steps_only() {
        let t = 1_780_000_000;
        let code = |step| format!("{:06}", hotp(RFC_SECRET, step, 6));
        let now = step_at(t);
        assert_eq!(verify(RFC_SECRET, &code(now), t, 0), Some(now));
        assert_eq!(verify(RFC_SECRET, &code(now - 1), t, 0), Some(now - 1));
        assert_eq!(verify(RFC_SECRET, &code(now + 1), t, 0), Some(now + 1));
        assert_eq!(verify(RFC_SECRET, &code(now - 2), t, 0), None);
    }

    #[test]
    fn rejects_replay_and_malformed_codes() {
        let t = 1_780_000_000;
        let now = step_at(t);
        let code = format!("{:06}", hotp(RFC_SECRET, now, 6));
        assert_eq!(verify(RFC_SECRET, &code, t, now), None, "same step twice is a replay");
        for bad in ["", "12345", "1234567", "abcdef", "12 456"] {
            assert_eq!(verify(RFC_SECRET, bad, t, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn uri_is_escaped() {
        let uri = otpauth_uri("QuantaID", "a b@x", "ABC");
        assert!(uri.starts_with("otpauth://totp/QuantaID:a+b%40x?secret=ABC&issuer=QuantaID"), "{uri}");
    }
}
