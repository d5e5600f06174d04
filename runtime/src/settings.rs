//! The settings both sidecars read, named and parsed in this one place: Redis (one
//! server or a Sentinel group), the tokens they share, logging and OTLP export.

use std::time::Duration;

use crate::env::Env;
use crate::redis_target::{RedisTarget, SentinelConfig};

pub const REDIS_HOST: &str = "QUANTAID_REDIS_HOST";
pub const REDIS_PASSWORD: &str = "QUANTAID_REDIS_PASSWORD";
pub const REDIS_DB: &str = "QUANTAID_REDIS_DB";
pub const REDIS_TIMEOUT_MS: &str = "QUANTAID_REDIS_TIMEOUT_MS";
pub const REDIS_SENTINELS: &str = "QUANTAID_REDIS_SENTINELS";
pub const REDIS_MASTER_NAME: &str = "QUANTAID_REDIS_MASTER_NAME";
pub const REDIS_SENTINEL_PASSWORD: &str = "QUANTAID_REDIS_SENTINEL_PASSWORD";
pub const CACHE_MAX_TTL_SECS: &str = "QUANTAID_CACHE_MAX_TTL_SECS";
pub const INTERNAL_TOKEN: &str = "QUANTAID_INTERNAL_TOKEN";
pub const BOOTSTRAP_ADMIN_TOKEN: &str = "QUANTAID_BOOTSTRAP_ADMIN_TOKEN";
pub const MAX_BODY_BYTES: &str = "QUANTAID_MAX_BODY_BYTES";
pub const LOG_LEVEL: &str = "QUANTAID_LOG_LEVEL";
/// Standard OpenTelemetry variables (their names are the standard's, not ours); either
/// one set turns OTLP trace export on.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Standard OpenTelemetry variable; set, every log line is also exported over OTLP/HTTP.
pub const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";

/// Where Redis is and how long a call to it may take.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// One server (`None`: [`REDIS_DISABLED`], or a Sentinel group instead).
    pub url: Option<String>,
    pub sentinel: Option<SentinelConfig>,
    pub timeout: Duration,
}

impl RedisSettings {
    /// Where to connect: Sentinel when a sentinel list is set, else the single server,
    /// else nowhere (caching or publishing off).
    pub fn target(&self) -> Result<Option<RedisTarget>, String> {
        match (&self.sentinel, &self.url) {
            (Some(s), _) => RedisTarget::sentinel(s).map(Some),
            (None, Some(url)) => Ok(Some(RedisTarget::direct(url.clone()))),
            (None, None) => Ok(None),
        }
    }

    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> anyhow::Result<Self> {
        let db = env.get(REDIS_DB, "0");
        let url = redis_url(&env.get(REDIS_HOST, "127.0.0.1:6379"), env.raw(REDIS_PASSWORD).as_deref(), &db)
            .map_err(|e| anyhow::anyhow!("{REDIS_HOST}/{REDIS_DB}: {e}"))?;
        let sentinel = SentinelConfig::parse(
            env.raw(REDIS_SENTINELS),
            env.get(REDIS_MASTER_NAME, "quantaid"),
            env.raw(REDIS_PASSWORD),
            env.raw(REDIS_SENTINEL_PASSWORD),
            &db,
        )
        .map_err(|e| anyhow::anyhow!("{REDIS_SENTINELS}/{REDIS_MASTER_NAME}: {e}"))?;
        Ok(RedisSettings { url, sentinel, timeout: env.millis(REDIS_TIMEOUT_MS, "100")? })
    }
}

/// How the sidecar logs and whether it exports over OTLP.
#[derive(Clone, Debug)]
pub struct TelemetrySettings {
    pub log_level: String,
    pub otlp_enabled: bool,
    pub otlp_logs_enabled: bool,
}

impl TelemetrySettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Self {
        TelemetrySettings {
            log_level: env.get(LOG_LEVEL, "info"),
            otlp_enabled: env.any_set(&[OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT]),
            otlp_logs_enabled: env.any_set(&[OTEL_EXPORTER_OTLP_LOGS_ENDPOINT]),
        }
    }
}

/// [`REDIS_HOST`] value that turns the cache (and so its invalidation) off.
pub const REDIS_DISABLED: &str = "none";

/// [`REDIS_HOST`] (`host[:port]`, port 6379 by default), [`REDIS_PASSWORD`] and a
/// database number into one `redis://` URL; [`REDIS_DISABLED`]
/// gives `None`. Errors name the part that is wrong.
pub fn redis_url(host: &str, password: Option<&str>, db: &str) -> Result<Option<String>, String> {
    let host = host.trim();
    if host == REDIS_DISABLED {
        return Ok(None);
    }
    let db: u32 = db.trim().parse().map_err(|e| format!("database {db:?}: {e}"))?;
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, port.parse::<u16>().map_err(|e| format!("host {host:?}: {e}"))?),
        None => (host, 6379),
    };
    if name.is_empty() {
        return Err(format!("host {host:?} names no host"));
    }
    // Percent-encode the password so any character survives the URL.
    let auth = match password.filter(|p| !p.is_empty()) {
        Some(p) => {
            let encoded: String = p
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!(":{encoded}@")
        }
        None => String::new(),
    };
    Ok(Some(format!("redis://{auth}{name}:{port}/{db}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        assert_eq!(redis_url("none", None, "0").unwrap(), None);
        assert_eq!(redis_url("redis-master", None, "2").unwrap().unwrap(), "redis://redis-master:6379/2");
        assert_eq!(redis_url("r:7000", Some("p@ss word"), "0").unwrap().unwrap(), "redis://:p%40ss%20word@r:7000/0");
        assert!(redis_url("r:notaport", None, "0").is_err());
        assert!(redis_url(":6379", None, "0").is_err());
    }

    #[test]
    fn redis_settings_from_the_environment() {
        let vars = [(REDIS_HOST, "r:7000"), (REDIS_TIMEOUT_MS, "250")];
        let env = Env::new(|name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()));
        let redis = RedisSettings::from_env(&env).unwrap();
        assert_eq!(redis.url.as_deref(), Some("redis://r:7000/0"));
        assert_eq!(redis.timeout, Duration::from_millis(250));
        assert!(redis.sentinel.is_none());
        let bad = Env::new(|name: &str| (name == REDIS_DB).then(|| "x".to_string()));
        assert!(RedisSettings::from_env(&bad).unwrap_err().to_string().contains(REDIS_HOST));
    }
}
