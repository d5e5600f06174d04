//! Every environment variable the proxy reads, parsed in one place.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use quantaid_protocol::forwarded::{self, IpNet};
use quantaid_runtime::env::Env;
use quantaid_runtime::settings::{RedisSettings, TelemetrySettings};

/// The settings both sidecars share are named in `quantaid_runtime::settings`.
pub use quantaid_runtime::settings::{
    BOOTSTRAP_ADMIN_TOKEN, CACHE_MAX_TTL_SECS, INTERNAL_TOKEN, LOG_LEVEL, MAX_BODY_BYTES, OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, REDIS_DB, REDIS_HOST, REDIS_MASTER_NAME, REDIS_PASSWORD,
    REDIS_SENTINELS, REDIS_SENTINEL_PASSWORD, REDIS_TIMEOUT_MS,
};
pub const LISTEN_ADDR: &str = "QUANTAID_PROXY_LISTEN_ADDR";
pub const METRICS_ADDR: &str = "QUANTAID_PROXY_METRICS_ADDR";
pub const BACKEND_ADDR: &str = "QUANTAID_BACKEND_ADDR";
pub const BACKEND_TIMEOUT_MS: &str = "QUANTAID_BACKEND_TIMEOUT_MS";
pub const LOOKUP_TIMEOUT_MS: &str = "QUANTAID_LOOKUP_TIMEOUT_MS";
pub const BREAKER_FAILURES: &str = "QUANTAID_REDIS_BREAKER_FAILURES";
pub const BREAKER_OPEN_MS: &str = "QUANTAID_REDIS_BREAKER_OPEN_MS";
pub const SESSION_TTL_SECS: &str = "QUANTAID_CACHE_SESSION_TTL_SECS";
pub const USER_TTL_SECS: &str = "QUANTAID_CACHE_USER_TTL_SECS";
pub const NEGATIVE_TTL_SECS: &str = "QUANTAID_CACHE_NEGATIVE_TTL_SECS";
pub const CLIENT_TTL_SECS: &str = "QUANTAID_CACHE_CLIENT_TTL_SECS";
pub const LOCAL_CACHE_BYTES: &str = "QUANTAID_CACHE_LOCAL_BYTES";
pub const LOCAL_CACHE_TTL_SECS: &str = "QUANTAID_CACHE_LOCAL_TTL_SECS";
pub const BLOOM_REBUILD_SECS: &str = "QUANTAID_BLOOM_REBUILD_SECS";
pub const BLOOM_CATCH_UP_MS: &str = "QUANTAID_BLOOM_CATCH_UP_MS";
pub const BLOOM_FP_RATE: &str = "QUANTAID_BLOOM_FP_RATE";
pub const THREADS: &str = "QUANTAID_PROXY_THREADS";
pub const SHUTDOWN_GRACE_SECS: &str = "QUANTAID_PROXY_SHUTDOWN_GRACE_SECS";
pub const TRUSTED_INGRESS: &str = "QUANTAID_PROXY_TRUSTED_INGRESS";
pub const MAX_HEADER_BYTES: &str = "QUANTAID_PROXY_MAX_HEADER_BYTES";
pub const MAX_HEADERS: &str = "QUANTAID_PROXY_MAX_HEADERS";
pub const HEADER_TIMEOUT_MS: &str = "QUANTAID_PROXY_HEADER_TIMEOUT_MS";
pub const BODY_TIMEOUT_MS: &str = "QUANTAID_PROXY_BODY_TIMEOUT_MS";
pub const MAX_CONNECTIONS: &str = "QUANTAID_PROXY_MAX_CONNECTIONS";

#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The identity backend in the same pod.
    pub backend_addr: SocketAddr,
    /// Bound on a proxied (pass-through) request's upstream reads.
    pub backend_timeout: Duration,
    /// Bound on a cache-miss lookup sent to the backend.
    pub lookup_timeout: Duration,
    /// The cache (neither a URL nor Sentinel: every lookup goes to the backend). Every
    /// Redis call gives up after its timeout; the breaker counts that as a failure.
    pub redis: RedisSettings,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    pub session_ttl: Duration,
    pub user_ttl: Duration,
    pub negative_ttl: Duration,
    pub client_ttl: Duration,
    pub cache_max_ttl: Duration,
    /// Memory for the local tier, the in-process copy of hot Redis entries (0: off).
    pub local_cache_bytes: u64,
    /// Longest a local copy is kept, even while Redis says nothing changed.
    pub local_cache_ttl: Duration,
    pub bloom_rebuild: Duration,
    pub bloom_catch_up: Duration,
    pub bloom_fp_rate: f64,
    /// Shared with the backend; without it there is no Bloom filter and no forward-auth
    /// check of access tokens on a cache miss.
    pub internal_token: Option<String>,
    pub bootstrap_admin_token: Option<String>,
    pub max_body_bytes: usize,
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub log_level: String,
    pub otlp_enabled: bool,
    /// Export log lines over OTLP/HTTP as well (deploy/grafana/README.md).
    pub otlp_logs_enabled: bool,
    /// Peers (an ingress, a mesh gateway) whose `X-Forwarded-For` is believed; any other
    /// peer is itself the client (docs/security.md).
    pub trusted_ingress: Vec<IpNet>,
    /// Largest request head (request line and headers) accepted: `431` beyond.
    pub max_header_bytes: usize,
    /// Most header lines in one request: `431` beyond.
    pub max_headers: usize,
    /// Time a connection has to deliver a whole request head, from its first byte (from
    /// the connection's start for its first request).
    pub header_timeout: Duration,
    /// Time a request has to deliver its whole body once its head is in.
    pub body_timeout: Duration,
    /// Client connections one replica holds at once; beyond, new ones get `503`.
    pub max_connections: usize,
}

impl Config {
    /// Whether the proxy caches at all (a Redis or a Sentinel group is configured).
    pub fn redis_enabled(&self) -> bool {
        self.redis.url.is_some() || self.redis.sentinel.is_some()
    }

    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env::new(lookup);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let redis = RedisSettings::from_env(&env)?;
        let telemetry = TelemetrySettings::from_env(&env);
        let config = Config {
            listen_addr: env.parse(LISTEN_ADDR, "0.0.0.0:8080")?,
            metrics_addr: env.parse(METRICS_ADDR, "0.0.0.0:9090")?,
            backend_addr: env.parse(BACKEND_ADDR, "127.0.0.1:8081")?,
            backend_timeout: env.millis(BACKEND_TIMEOUT_MS, "10000")?,
            lookup_timeout: env.millis(LOOKUP_TIMEOUT_MS, "2000")?,
            redis,
            breaker_failures: env.parse(BREAKER_FAILURES, "3")?,
            breaker_open: env.millis(BREAKER_OPEN_MS, "1000")?,
            session_ttl: env.secs(SESSION_TTL_SECS, "1800")?,
            user_ttl: env.secs(USER_TTL_SECS, "300")?,
            negative_ttl: env.secs(NEGATIVE_TTL_SECS, "30")?,
            client_ttl: env.secs(CLIENT_TTL_SECS, "60")?,
            cache_max_ttl: env.secs(CACHE_MAX_TTL_SECS, "3600")?,
            local_cache_bytes: env.parse(LOCAL_CACHE_BYTES, "16777216")?,
            local_cache_ttl: env.secs(LOCAL_CACHE_TTL_SECS, "30")?,
            bloom_rebuild: env.secs(BLOOM_REBUILD_SECS, "600")?,
            bloom_catch_up: env.millis(BLOOM_CATCH_UP_MS, "5000")?,
            bloom_fp_rate: env.parse(BLOOM_FP_RATE, "0.01")?,
            internal_token: env.raw(INTERNAL_TOKEN),
            bootstrap_admin_token: env.raw(BOOTSTRAP_ADMIN_TOKEN),
            max_body_bytes: env.parse(MAX_BODY_BYTES, "65536")?,
            threads: env.parse(THREADS, &cores.to_string())?,
            shutdown_grace: env.secs(SHUTDOWN_GRACE_SECS, "5")?,
            log_level: telemetry.log_level,
            otlp_enabled: telemetry.otlp_enabled,
            otlp_logs_enabled: telemetry.otlp_logs_enabled,
            trusted_ingress: forwarded::parse_nets(&env.get(TRUSTED_INGRESS, "")).map_err(|e| anyhow::anyhow!("{TRUSTED_INGRESS}: {e}"))?,
            max_header_bytes: env.parse(MAX_HEADER_BYTES, "32768")?,
            max_headers: env.parse(MAX_HEADERS, "100")?,
            header_timeout: env.millis(HEADER_TIMEOUT_MS, "10000")?,
            body_timeout: env.millis(BODY_TIMEOUT_MS, "30000")?,
            max_connections: env.parse(MAX_CONNECTIONS, "4096")?,
        };
        if !(16_384..=65_536).contains(&config.max_header_bytes) {
            bail!("{MAX_HEADER_BYTES} must be between 16384 and 65536");
        }
        if !(16..=256).contains(&config.max_headers) {
            bail!("{MAX_HEADERS} must be between 16 and 256");
        }
        if config.header_timeout.is_zero() || config.body_timeout.is_zero() || config.max_connections == 0 {
            bail!("{HEADER_TIMEOUT_MS}, {BODY_TIMEOUT_MS} and {MAX_CONNECTIONS} must be positive");
        }
        if !(0.0001..0.5).contains(&config.bloom_fp_rate) {
            bail!("{BLOOM_FP_RATE} must be between 0.0001 and 0.5");
        }
        if config.breaker_failures == 0 || config.threads == 0 {
            bail!("{BREAKER_FAILURES} and {THREADS} must be at least 1");
        }
        // Entries may not outlive the revocation markers the backend writes.
        for (name, ttl) in [(SESSION_TTL_SECS, config.session_ttl), (USER_TTL_SECS, config.user_ttl)] {
            if ttl.mul_f64(1.1) > config.cache_max_ttl {
                bail!("{name} plus 10% jitter must stay within {CACHE_MAX_TTL_SECS}");
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_errors() {
        let c = config(&[]).unwrap();
        assert_eq!((c.listen_addr.port(), c.metrics_addr.port(), c.backend_addr.port()), (8080, 9090, 8081));
        assert_eq!(c.redis.url.as_deref(), Some("redis://127.0.0.1:6379/0"));
        assert_eq!(c.session_ttl, Duration::from_secs(1800));
        let err = config(&[(REDIS_TIMEOUT_MS, "soon")]).unwrap_err().to_string();
        assert!(err.contains(REDIS_TIMEOUT_MS), "{err}");
        assert!(config(&[(SESSION_TTL_SECS, "3500")]).is_err(), "TTL past the marker lifetime");
        assert_eq!(config(&[(REDIS_HOST, "none")]).unwrap().redis.url, None);
        assert_eq!((c.max_header_bytes, c.max_headers, c.max_connections), (32768, 100, 4096));
        assert!(c.trusted_ingress.is_empty());
        assert_eq!(config(&[(TRUSTED_INGRESS, "10.0.0.0/8, 192.168.1.1")]).unwrap().trusted_ingress.len(), 2);
        for bad in [(TRUSTED_INGRESS, "10.0.0.0/40"), (MAX_HEADER_BYTES, "1048576"), (MAX_HEADERS, "1000"), (MAX_CONNECTIONS, "0")] {
            let err = config(&[bad]).unwrap_err().to_string();
            assert!(err.contains(bad.0), "{err}");
        }
        let c = config(&[(REDIS_HOST, "none"), (REDIS_SENTINELS, "s1:26379,s2:26379"), (REDIS_MASTER_NAME, "cache")]).unwrap();
        assert!(c.redis_enabled(), "sentinels alone enable the cache");
        assert_eq!(c.redis.sentinel.unwrap().master_name, "cache");
        let err = config(&[(REDIS_SENTINELS, ":1")]).unwrap_err().to_string();
        assert!(err.contains(REDIS_SENTINELS), "{err}");
    }
}
