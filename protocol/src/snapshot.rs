//! The Bloom snapshot stream of `GET /internal/v1/bloom-snapshot`: the backend writes it,
//! the proxy reads it into its "definitely absent" filter (docs/caching.md).
//!
//! Layout: `watermark_ms: i64` big-endian, then records `kind: u8, len: u8, value`,
//! where the value is a session's or token's SHA-256 digest, or a user id's 16 bytes.

use uuid::Uuid;

use crate::cache::key_from_digest;

const SESSION: u8 = 1;
const TOKEN: u8 = 2;
const USER: u8 = 3;

/// Builds a snapshot stream.
pub struct SnapshotWriter {
    out: Vec<u8>,
}

impl SnapshotWriter {
    /// Keys created before `watermark_ms` (Unix ms) are all in the snapshot.
    pub fn new(watermark_ms: i64) -> Self {
        SnapshotWriter { out: watermark_ms.to_be_bytes().to_vec() }
    }

    pub fn session(&mut self, digest: &[u8]) {
        self.record(SESSION, digest);
    }

    pub fn token(&mut self, digest: &[u8]) {
        self.record(TOKEN, digest);
    }

    pub fn user(&mut self, id: &Uuid) {
        self.record(USER, id.as_bytes());
    }

    fn record(&mut self, kind: u8, value: &[u8]) {
        // Digests are 32 bytes and ids 16: a length byte always fits.
        let len = u8::try_from(value.len()).unwrap_or(u8::MAX);
        self.out.extend_from_slice(&[kind, len]);
        self.out.extend_from_slice(&value[..usize::from(len)]);
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// A decoded snapshot: its watermark and the cache keys it lists.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub watermark_ms: i64,
    pub keys: Vec<String>,
}

pub fn parse(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    let header: [u8; 8] = bytes.get(..8).and_then(|h| h.try_into().ok()).ok_or_else(|| anyhow::anyhow!("short snapshot"))?;
    let mut keys = Vec::new();
    let mut rest = &bytes[8..];
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len);
        anyhow::ensure!(tail.len() >= len, "truncated snapshot record");
        let (value, next) = tail.split_at(len);
        keys.push(match *kind {
            SESSION => key_from_digest("session", value),
            TOKEN => key_from_digest("token", value),
            USER => format!("user:{}", Uuid::from_slice(value)?),
            other => anyhow::bail!("unknown snapshot record kind {other}"),
        });
        rest = next;
    }
    anyhow::ensure!(rest.is_empty(), "trailing bytes in snapshot");
    Ok(Snapshot { watermark_ms: i64::from_be_bytes(header), keys })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{session_key, token_key, user_key};
    use sha2::{Digest, Sha256};

    #[test]
    fn round_trip() {
        let user = Uuid::now_v7();
        let mut w = SnapshotWriter::new(1_700_000_000_123);
        w.session(&Sha256::digest("qst_a"));
        w.token(&Sha256::digest("qat_b"));
        w.user(&user);
        let bytes = w.finish();
        let s = parse(&bytes).unwrap();
        assert_eq!(s.watermark_ms, 1_700_000_000_123);
        assert_eq!(s.keys, vec![session_key("qst_a"), token_key("qat_b"), user_key(&user)]);
        assert_eq!(parse(&SnapshotWriter::new(-5).finish()).unwrap(), Snapshot { watermark_ms: -5, keys: vec![] });
    }

    #[test]
    fn damaged_streams_are_refused() {
        let mut w = SnapshotWriter::new(1);
        w.user(&Uuid::now_v7());
        let bytes = w.finish();
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse(&[1, 2]).is_err());
        let mut unknown = SnapshotWriter::new(1).finish();
        unknown.extend([9, 0]);
        assert!(parse(&unknown).is_err());
    }
}
