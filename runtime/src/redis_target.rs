//! Where the cache's Redis is, for both sidecars: one address (`REDIS_HOST`), or the
//! current master of a Sentinel-monitored group (`QUANTAID_REDIS_SENTINELS` +
//! `QUANTAID_REDIS_MASTER_NAME`), asked again whenever a connection is (re)made so
//! that a failover is followed (docs/caching.md, "Redis Sentinel").

use std::time::Duration;

use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

pub enum RedisTarget {
    /// A single Redis, by URL.
    Direct { url: String },
    /// The master Sentinel currently names.
    Sentinel(Box<SentinelTarget>),
}

pub struct SentinelTarget {
    /// The Sentinel client keeps a connection per sentinel; one caller at a time.
    sentinel: tokio::sync::Mutex<Sentinel>,
    master_name: String,
    node: SentinelNodeConnectionInfo,
    sentinels: String,
}

/// How to find the master through Sentinel, as configured (both sidecars read the same
/// variables: `QUANTAID_REDIS_SENTINELS`, `QUANTAID_REDIS_MASTER_NAME`,
/// `QUANTAID_REDIS_SENTINEL_PASSWORD`, plus `REDIS_PASSWORD` and `QUANTAID_REDIS_DB`).
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// Comma-separated `host[:port]` list of sentinels (port 26379 by default).
    pub sentinels: String,
    pub master_name: String,
    /// Password of the Redis servers (the master and its replicas).
    pub password: Option<String>,
    /// Password of the sentinels themselves, if they require one.
    pub sentinel_password: Option<String>,
    pub db: i64,
}

/// Never prints the passwords.
impl std::fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SentinelConfig {
    /// `None` when no sentinel list is set; otherwise a checked configuration.
    pub fn parse(
        sentinels: Option<String>,
        master_name: String,
        password: Option<String>,
        sentinel_password: Option<String>,
        db: &str,
    ) -> Result<Option<SentinelConfig>, String> {
        let Some(sentinels) = sentinels.filter(|s| !s.trim().is_empty()) else { return Ok(None) };
        let db = db.trim().parse().map_err(|e| format!("database {db:?}: {e}"))?;
        let config = SentinelConfig { sentinels, master_name, password, sentinel_password, db };
        RedisTarget::sentinel(&config)?;
        Ok(Some(config))
    }
}

impl RedisTarget {
    pub fn direct(url: String) -> RedisTarget {
        RedisTarget::Direct { url }
    }

    pub fn sentinel(s: &SentinelConfig) -> Result<RedisTarget, String> {
        let mut infos: Vec<ConnectionInfo> = Vec::new();
        for entry in s.sentinels.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (host, port) = match entry.rsplit_once(':') {
                Some((host, port)) => (host, port.parse::<u16>().map_err(|e| format!("sentinel {entry:?}: {e}"))?),
                None => (entry, 26379),
            };
            if host.is_empty() {
                return Err(format!("sentinel {entry:?} names no host"));
            }
            let mut info = (host, port).into_connection_info().map_err(|e| format!("sentinel {entry:?}: {e}"))?;
            info.redis.password = s.sentinel_password.clone().filter(|p| !p.is_empty());
            infos.push(info);
        }
        if infos.is_empty() {
            return Err("no sentinel given".into());
        }
        if s.master_name.trim().is_empty() {
            return Err("the master name is empty".into());
        }
        let sentinel = Sentinel::build(infos).map_err(|e| e.to_string())?;
        let node = SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(RedisConnectionInfo {
                db: s.db,
                password: s.password.clone().filter(|p| !p.is_empty()),
                ..Default::default()
            }),
        };
        Ok(RedisTarget::Sentinel(Box::new(SentinelTarget {
            sentinel: tokio::sync::Mutex::new(sentinel),
            master_name: s.master_name.trim().to_string(),
            node,
            sentinels: s.sentinels.to_string(),
        })))
    }

    /// Whether writes can be lost to a failover (a replica may be promoted): then the
    /// backend waits for a replica to acknowledge its markers.
    pub fn is_replicated(&self) -> bool {
        matches!(self, RedisTarget::Sentinel(_))
    }

    /// For logs: where Redis is looked for (never a password).
    pub fn describe(&self) -> String {
        match self {
            RedisTarget::Direct { url } => {
                let info = url.as_str().into_connection_info();
                info.map_or_else(|_| "redis".to_string(), |i| i.addr.to_string())
            }
            RedisTarget::Sentinel(s) => format!("master {:?} of sentinels {}", s.master_name, s.sentinels),
        }
    }

    /// A client for the Redis to talk to now, and its address. For Sentinel this asks
    /// the sentinels, in order, for the master and checks that it says it is one; bounded
    /// by `timeout`.
    pub async fn client(&self, timeout: Duration) -> redis::RedisResult<(redis::Client, String)> {
        let client = match self {
            RedisTarget::Direct { url } => redis::Client::open(url.as_str())?,
            RedisTarget::Sentinel(s) => {
                let lookup = async {
                    let mut sentinel = s.sentinel.lock().await;
                    sentinel.async_master_for(&s.master_name, Some(&s.node)).await
                };
                tokio::time::timeout(timeout, lookup)
                    .await
                    .map_err(|_| redis::RedisError::from((redis::ErrorKind::IoError, "timed out asking Sentinel for the master")))??
            }
        };
        let addr = client.get_connection_info().addr.to_string();
        Ok((client, addr))
    }

    /// Where the master is now, if this target can move (Sentinel); `None` for a single
    /// Redis or when no sentinel answered.
    pub async fn current_master(&self, timeout: Duration) -> Option<String> {
        match self {
            RedisTarget::Direct { .. } => None,
            RedisTarget::Sentinel(_) => self.client(timeout).await.ok().map(|(_, addr)| addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target of settings with this URL and Sentinel group.
    fn target(url: Option<&str>, sentinel: Option<&SentinelConfig>) -> Result<Option<RedisTarget>, String> {
        let settings =
            crate::settings::RedisSettings { url: url.map(str::to_string), sentinel: sentinel.cloned(), timeout: Duration::ZERO };
        settings.target()
    }

    fn parse(sentinels: &str, name: &str) -> Result<Option<SentinelConfig>, String> {
        SentinelConfig::parse(Some(sentinels.into()), name.into(), Some("secret".into()), None, "0")
    }

    #[test]
    fn sentinel_lists_parse_and_errors_say_what_is_wrong() {
        let c = parse("10.0.0.1:26379, sentinel-2", "quantaid").unwrap().unwrap();
        let t = target(Some("redis://ignored:6379/0"), Some(&c)).unwrap().unwrap();
        assert!(t.is_replicated());
        assert!(t.describe().contains("quantaid"), "{}", t.describe());
        assert!(!format!("{c:?}").contains("secret"), "Debug leaks the password");
        assert_eq!(SentinelConfig::parse(None, "q".into(), None, None, "0").unwrap(), None);
        assert!(parse(" , ", "q").unwrap_err().contains("no sentinel"));
        assert!(parse("a:notaport", "q").unwrap_err().contains("a:notaport"));
        assert!(parse(":26379", "q").unwrap_err().contains("no host"));
        assert!(parse("a:1", " ").unwrap_err().contains("master name"));
        let direct = target(Some("redis://127.0.0.1:6379/0"), None).unwrap().unwrap();
        assert!(!direct.is_replicated());
        assert_eq!(direct.describe(), "127.0.0.1:6379");
        assert!(target(None, None).unwrap().is_none());
    }
}
