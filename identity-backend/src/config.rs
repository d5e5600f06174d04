//! Every environment variable the backend reads, parsed in one place.
//!
//! Tests build a [`Config`] directly (or through [`Config::from_lookup`] with a map);
//! nothing here calls `std::env::set_var`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use quantaid_protocol::forwarded::{self, IpNet};
use quantaid_runtime::env::Env;
use quantaid_runtime::settings::{RedisSettings, TelemetrySettings};

/// The settings both sidecars share are named in `quantaid_runtime::settings`.
pub use quantaid_runtime::settings::{
    BOOTSTRAP_ADMIN_TOKEN, CACHE_MAX_TTL_SECS, INTERNAL_TOKEN, LOG_LEVEL, MAX_BODY_BYTES, OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, REDIS_DB, REDIS_HOST, REDIS_MASTER_NAME, REDIS_PASSWORD,
    REDIS_SENTINELS, REDIS_SENTINEL_PASSWORD, REDIS_TIMEOUT_MS,
};
pub const LISTEN_ADDR: &str = "QUANTAID_LISTEN_ADDR";
pub const METRICS_ADDR: &str = "QUANTAID_METRICS_ADDR";
pub const DB_HOST: &str = "QUANTAID_DB_HOST";
pub const DB_PORT: &str = "QUANTAID_DB_PORT";
pub const DB_USER: &str = "QUANTAID_DB_USER";
pub const DB_PASSWORD: &str = "QUANTAID_DB_PASSWORD";
pub const DB_NAME: &str = "QUANTAID_DB_NAME";
pub const DB_POOL_MIN: &str = "QUANTAID_DB_POOL_MIN";
pub const DB_POOL_MAX: &str = "QUANTAID_DB_POOL_MAX";
pub const DB_POOL_WAIT_MS: &str = "QUANTAID_DB_POOL_WAIT_MS";
pub const DB_STATEMENT_TIMEOUT_MS: &str = "QUANTAID_DB_STATEMENT_TIMEOUT_MS";
pub const DB_MIGRATE_ON_START: &str = "QUANTAID_DB_MIGRATE_ON_START";
pub const TRUSTED_PROXIES: &str = "QUANTAID_TRUSTED_PROXIES";
pub const ISSUER: &str = "QUANTAID_ISSUER";
pub const SESSION_TTL_SECS: &str = "QUANTAID_SESSION_TTL_SECS";
pub const ACCESS_TOKEN_TTL_SECS: &str = "QUANTAID_ACCESS_TOKEN_TTL_SECS";
pub const REFRESH_TOKEN_TTL_SECS: &str = "QUANTAID_REFRESH_TOKEN_TTL_SECS";
pub const MFA_TOKEN_TTL_SECS: &str = "QUANTAID_MFA_TOKEN_TTL_SECS";
pub const ARGON2_MEMORY_KIB: &str = "QUANTAID_ARGON2_MEMORY_KIB";
pub const ARGON2_ITERATIONS: &str = "QUANTAID_ARGON2_ITERATIONS";
pub const ARGON2_PARALLELISM: &str = "QUANTAID_ARGON2_PARALLELISM";
pub const PASSWORD_HASH_WORKERS: &str = "QUANTAID_PASSWORD_HASH_WORKERS";
pub const PASSWORD_HASH_QUEUE: &str = "QUANTAID_PASSWORD_HASH_QUEUE";
pub const LOGIN_MAX_FAILURES_PER_ACCOUNT: &str = "QUANTAID_LOGIN_MAX_FAILURES_PER_ACCOUNT";
pub const LOGIN_MAX_FAILURES_PER_IP: &str = "QUANTAID_LOGIN_MAX_FAILURES_PER_IP";
pub const LOGIN_THROTTLE_WINDOW_SECS: &str = "QUANTAID_LOGIN_THROTTLE_WINDOW_SECS";
pub const MFA_MAX_FAILURES_PER_ACCOUNT: &str = "QUANTAID_MFA_MAX_FAILURES_PER_ACCOUNT";
pub const MFA_MAX_FAILURES_PER_IP: &str = "QUANTAID_MFA_MAX_FAILURES_PER_IP";
pub const MFA_THROTTLE_WINDOW_SECS: &str = "QUANTAID_MFA_THROTTLE_WINDOW_SECS";
pub const HEADER_READ_TIMEOUT_MS: &str = "QUANTAID_HEADER_READ_TIMEOUT_MS";
pub const CSRF_TRUSTED_ORIGINS: &str = "QUANTAID_CSRF_TRUSTED_ORIGINS";
pub const REAUTH_MAX_AGE_SECS: &str = "QUANTAID_REAUTH_MAX_AGE_SECS";
pub const SHUTDOWN_GRACE_SECS: &str = "QUANTAID_SHUTDOWN_GRACE_SECS";
pub const REDIS_WAIT_REPLICAS: &str = "QUANTAID_REDIS_WAIT_REPLICAS";
pub const BLOOM_WATERMARK_MARGIN_MS: &str = "QUANTAID_BLOOM_WATERMARK_MARGIN_MS";

/// `REDIS_HOST` value that turns cache invalidation off (a backend without a proxy).
pub use quantaid_runtime::settings::REDIS_DISABLED;

/// One PostgreSQL server the backend may connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbServer {
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug)]
pub struct DbConfig {
    /// Tried in order for every new connection; the first that accepts writes is used
    /// (libpq's `target_session_attrs=read-write`), so after a failover the promoted
    /// standby is found without a configuration change.
    pub servers: Vec<DbServer>,
    pub user: String,
    pub password: String,
    pub name: String,
    pub pool_min: u32,
    pub pool_max: u32,
    /// How long a request waits for a pooled connection before it gets a 503.
    pub pool_wait: Duration,
    /// Server-side `statement_timeout`; the client also gives up shortly after it.
    pub statement_timeout: Duration,
    pub migrate_on_start: bool,
}

#[derive(Clone, Debug)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    pub max_failures_per_account: i32,
    pub max_failures_per_ip: i32,
    pub window: chrono::TimeDelta,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub db: DbConfig,
    /// The first-setup admin token; `None` disables it. Only its digest is kept at run time.
    pub bootstrap_admin_token: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub issuer: String,
    /// Web origins whose pages may make cookie-authenticated state changes: the
    /// issuer's own origin plus any configured ones (`scheme://host[:port]`, lower-case).
    pub trusted_origins: Vec<String>,
    /// How recently a session must have presented the password or a TOTP code for a
    /// sensitive change (TOTP enrolment or removal, email change).
    pub reauth_max_age: chrono::TimeDelta,
    pub session_ttl: chrono::TimeDelta,
    pub access_token_ttl: chrono::TimeDelta,
    pub refresh_token_ttl: chrono::TimeDelta,
    pub mfa_token_ttl: chrono::TimeDelta,
    pub argon2: Argon2Config,
    pub password_hash_workers: usize,
    pub password_hash_queue: usize,
    pub throttle: ThrottleConfig,
    /// MFA code attempts, counted across challenges (see `docs/security.md`).
    pub mfa_throttle: ThrottleConfig,
    pub max_body_bytes: usize,
    /// How long a connection may take to send a request head, counted from when it
    /// opens or its previous response ends (so it also ends idle connections).
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_level: String,
    /// The proxies' cache, for publishing revocations (neither a URL nor Sentinel: off).
    pub redis: RedisSettings,
    /// Replicas that must acknowledge revocation markers before a revocation answers
    /// 2xx (`WAIT`), so that a failover cannot lose them; 1 with Sentinel, 0 otherwise.
    pub redis_wait_replicas: u32,
    /// The longest any cache entry may live; revocation markers outlive it.
    pub cache_max_ttl: Duration,
    /// Shared secret for the proxy's `/internal/v1/*` calls; `None` disables them.
    pub internal_token: Option<String>,
    /// How far the Bloom watermark trails each snapshot (see `internal.rs`).
    pub bloom_watermark_margin: Duration,
    /// Export spans over OTLP/HTTP (the exporter reads the other `OTEL_*` variables).
    pub otlp_enabled: bool,
    /// Export log lines over OTLP/HTTP as well (deploy/grafana/README.md).
    pub otlp_logs_enabled: bool,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses every variable through `lookup`; each error names its variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env::new(lookup);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);

        let trusted_proxies = forwarded::parse_nets(&env.get(TRUSTED_PROXIES, "127.0.0.1/32,::1/128"))
            .map_err(|e| anyhow::anyhow!("{TRUSTED_PROXIES}: {e}"))?;

        let db = DbConfig {
            servers: db_servers(&env.get(DB_HOST, "127.0.0.1"), &env.get(DB_PORT, "5432"))?,
            user: env.get(DB_USER, "quantaid"),
            password: env.raw(DB_PASSWORD).unwrap_or_default(),
            name: env.get(DB_NAME, "quantaid"),
            pool_min: env.parse(DB_POOL_MIN, "10")?,
            pool_max: env.parse(DB_POOL_MAX, "100")?,
            pool_wait: env.millis(DB_POOL_WAIT_MS, "2000")?,
            statement_timeout: env.millis(DB_STATEMENT_TIMEOUT_MS, "5000")?,
            migrate_on_start: env.parse(DB_MIGRATE_ON_START, "true")?,
        };
        if db.pool_min > db.pool_max || db.pool_max == 0 {
            bail!("{DB_POOL_MIN} ({}) must be <= {DB_POOL_MAX} ({}), and the max above 0", db.pool_min, db.pool_max);
        }

        let issuer = env.get(ISSUER, "http://localhost:8080").trim_end_matches('/').to_string();
        let mut trusted_origins = vec![origin_of(&issuer).with_context(|| format!("{ISSUER}: {issuer:?} is not an http(s) URL"))?];
        for raw in env.get(CSRF_TRUSTED_ORIGINS, "").split(',').map(str::trim).filter(|s| !s.is_empty()) {
            trusted_origins.push(origin_of(raw).with_context(|| format!("{CSRF_TRUSTED_ORIGINS}: {raw:?} is not an http(s) origin"))?);
        }

        let redis = RedisSettings::from_env(&env)?;
        let telemetry = TelemetrySettings::from_env(&env);
        let config = Config {
            // Only the proxy in the same pod calls the API: loopback unless told otherwise.
            listen_addr: env.parse(LISTEN_ADDR, "127.0.0.1:8081")?,
            metrics_addr: env.parse(METRICS_ADDR, "0.0.0.0:9091")?,
            db,
            bootstrap_admin_token: env.raw(BOOTSTRAP_ADMIN_TOKEN),
            trusted_proxies,
            issuer,
            trusted_origins,
            reauth_max_age: env.delta_secs(REAUTH_MAX_AGE_SECS, "300")?,
            session_ttl: env.delta_secs(SESSION_TTL_SECS, "43200")?,
            access_token_ttl: env.delta_secs(ACCESS_TOKEN_TTL_SECS, "3600")?,
            refresh_token_ttl: env.delta_secs(REFRESH_TOKEN_TTL_SECS, "2592000")?,
            mfa_token_ttl: env.delta_secs(MFA_TOKEN_TTL_SECS, "300")?,
            argon2: Argon2Config {
                memory_kib: env.parse(ARGON2_MEMORY_KIB, "19456")?,
                iterations: env.parse(ARGON2_ITERATIONS, "2")?,
                parallelism: env.parse(ARGON2_PARALLELISM, "1")?,
            },
            password_hash_workers: env.parse(PASSWORD_HASH_WORKERS, &cores.to_string())?,
            password_hash_queue: env.parse(PASSWORD_HASH_QUEUE, "64")?,
            throttle: ThrottleConfig {
                max_failures_per_account: env.parse(LOGIN_MAX_FAILURES_PER_ACCOUNT, "5")?,
                max_failures_per_ip: env.parse(LOGIN_MAX_FAILURES_PER_IP, "50")?,
                window: env.delta_secs(LOGIN_THROTTLE_WINDOW_SECS, "900")?,
            },
            mfa_throttle: ThrottleConfig {
                max_failures_per_account: env.parse(MFA_MAX_FAILURES_PER_ACCOUNT, "10")?,
                max_failures_per_ip: env.parse(MFA_MAX_FAILURES_PER_IP, "50")?,
                window: env.delta_secs(MFA_THROTTLE_WINDOW_SECS, "14400")?,
            },
            max_body_bytes: env.parse(MAX_BODY_BYTES, "65536")?,
            header_read_timeout: env.millis(HEADER_READ_TIMEOUT_MS, "10000")?,
            shutdown_grace: env.secs(SHUTDOWN_GRACE_SECS, "10")?,
            log_level: telemetry.log_level,
            redis,
            redis_wait_replicas: env.parse(REDIS_WAIT_REPLICAS, if env.raw(REDIS_SENTINELS).is_some() { "1" } else { "0" })?,
            cache_max_ttl: env.secs(CACHE_MAX_TTL_SECS, "3600")?,
            internal_token: env.raw(INTERNAL_TOKEN),
            bloom_watermark_margin: env.millis(BLOOM_WATERMARK_MARGIN_MS, "60000")?,
            otlp_enabled: telemetry.otlp_enabled,
            otlp_logs_enabled: telemetry.otlp_logs_enabled,
        };
        if config.argon2.memory_kib < 19 * 1024 || config.argon2.iterations < 2 {
            // OWASP's floor for argon2id; weaker settings are refused, not silently used.
            bail!("{ARGON2_MEMORY_KIB} must be >= 19456 and {ARGON2_ITERATIONS} >= 2 (OWASP argon2id minimum)");
        }
        for (t, account, window) in [
            (&config.throttle, LOGIN_MAX_FAILURES_PER_ACCOUNT, LOGIN_THROTTLE_WINDOW_SECS),
            (&config.mfa_throttle, MFA_MAX_FAILURES_PER_ACCOUNT, MFA_THROTTLE_WINDOW_SECS),
        ] {
            if t.max_failures_per_account < 1 || t.max_failures_per_ip < 1 || t.window <= chrono::TimeDelta::zero() {
                bail!("{account} and its per-IP limit must be at least 1, and {window} above 0");
            }
        }
        if config.header_read_timeout.is_zero() {
            bail!("{HEADER_READ_TIMEOUT_MS} must be above 0");
        }
        if config.password_hash_workers == 0 {
            bail!("{PASSWORD_HASH_WORKERS} must be at least 1");
        }
        Ok(config)
    }
}

/// The web origin of an http(s) URL, as browsers write it in `Origin`: lower-case,
/// without path and without the scheme's default port.
pub fn origin_of(url: &str) -> Option<String> {
    let url = url.trim().to_ascii_lowercase();
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.strip_suffix(default_port).unwrap_or(authority)))
}

/// `DB_HOST` is a comma-separated list of hosts; `QUANTAID_DB_PORT` is one port for all
/// of them or one per host, in the same order (libpq's multi-host rules).
fn db_servers(hosts: &str, ports: &str) -> anyhow::Result<Vec<DbServer>> {
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if hosts.iter().any(|h| h.is_empty()) {
        bail!("{DB_HOST}={hosts:?}: empty host in the list", hosts = hosts.join(","));
    }
    let ports = ports
        .split(',')
        .map(|p| p.trim().parse::<u16>().map_err(|e| anyhow::anyhow!("{DB_PORT}={ports:?}: {e}")))
        .collect::<anyhow::Result<Vec<u16>>>()?;
    if ports.len() != 1 && ports.len() != hosts.len() {
        bail!("{DB_PORT} lists {} ports for {} hosts in {DB_HOST}: give one port, or one per host", ports.len(), hosts.len());
    }
    Ok(hosts
        .iter()
        .enumerate()
        .map(|(i, host)| DbServer { host: host.to_string(), port: ports[if ports.len() == 1 { 0 } else { i }] })
        .collect())
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
    fn defaults_match_the_readme() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen_addr.port(), 8081);
        assert!(c.listen_addr.ip().is_loopback(), "only the pod's own proxy needs the API");
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.metrics_addr.port(), 9091);
        assert_eq!((c.db.pool_min, c.db.pool_max), (10, 100));
        assert_eq!(c.argon2.memory_kib, 19456);
        assert!(c.bootstrap_admin_token.is_none());
        assert_eq!(c.redis.url.as_deref(), Some("redis://127.0.0.1:6379/0"));
        assert!(c.redis.sentinel.is_none());
        assert_eq!(c.redis_wait_replicas, 0);
    }

    #[test]
    fn sentinel_settings() {
        let c = config(&[(REDIS_SENTINELS, "s1:26379,s2:26379"), (REDIS_PASSWORD, "pw")]).unwrap();
        let s = c.redis.sentinel.unwrap();
        assert_eq!((s.master_name.as_str(), s.password.as_deref()), ("quantaid", Some("pw")));
        assert_eq!(c.redis_wait_replicas, 1, "markers wait for a replica under Sentinel");
        let c = config(&[(REDIS_SENTINELS, "s1"), (REDIS_WAIT_REPLICAS, "0")]).unwrap();
        assert_eq!(c.redis_wait_replicas, 0);
        let err = config(&[(REDIS_SENTINELS, "s1:port")]).unwrap_err().to_string();
        assert!(err.contains(REDIS_SENTINELS), "{err}");
    }

    /// At the defaults, fewer than 100 MFA codes per account can be tried in any 24 hours:
    /// windows do not overlap, so at most `day / window + 1` of them meet one day.
    #[test]
    fn mfa_defaults_allow_fewer_than_100_guesses_a_day() {
        let t = config(&[]).unwrap().mfa_throttle;
        let windows_per_day = 86_400 / t.window.num_seconds() + 1;
        let guesses = windows_per_day * i64::from(t.max_failures_per_account);
        assert!(guesses < 100, "{guesses}");
    }

    #[test]
    fn the_old_names_of_renamed_variables_still_work() {
        let c = config(&[("DB_HOST", "db.internal"), ("DB_PASSWORD", "pw"), ("REDIS_HOST", "cache:7000")]).unwrap();
        assert_eq!(c.db.servers[0].host, "db.internal");
        assert_eq!(c.db.password, "pw");
        assert_eq!(c.redis.url.as_deref(), Some("redis://cache:7000/0"));
        let c = config(&[("DB_HOST", "old"), (DB_HOST, "new")]).unwrap();
        assert_eq!(c.db.servers[0].host, "new", "the new name wins");
    }

    #[test]
    fn errors_name_the_variable() {
        let err = config(&[(DB_POOL_MAX, "lots")]).unwrap_err().to_string();
        assert!(err.contains(DB_POOL_MAX), "{err}");
        let err = config(&[(ARGON2_MEMORY_KIB, "4096")]).unwrap_err().to_string();
        assert!(err.contains(ARGON2_MEMORY_KIB), "{err}");
    }

    #[test]
    fn origins_are_normalized() {
        assert_eq!(origin_of("http://localhost:8080").as_deref(), Some("http://localhost:8080"));
        assert_eq!(origin_of("HTTPS://ID.Example.com:443/base/").as_deref(), Some("https://id.example.com"));
        for bad in ["localhost:8080", "ftp://x", "https://", "https://u@x"] {
            assert_eq!(origin_of(bad), None, "{bad}");
        }
        let c = config(&[(CSRF_TRUSTED_ORIGINS, "https://app.example, https://b.example:8443")]).unwrap();
        assert_eq!(c.trusted_origins, ["http://localhost:8080", "https://app.example", "https://b.example:8443"]);
        assert!(config(&[(CSRF_TRUSTED_ORIGINS, "app.example")]).unwrap_err().to_string().contains(CSRF_TRUSTED_ORIGINS));
    }

    #[test]
    fn database_servers_follow_libpq_multi_host_rules() {
        let server = |host: &str, port| DbServer { host: host.into(), port };
        let c = config(&[]).unwrap();
        assert_eq!(c.db.servers, vec![server("127.0.0.1", 5432)]);
        let c = config(&[(DB_HOST, "pg-a, pg-b"), (DB_PORT, "5433")]).unwrap();
        assert_eq!(c.db.servers, vec![server("pg-a", 5433), server("pg-b", 5433)]);
        let c = config(&[(DB_HOST, "pg-a,pg-b"), (DB_PORT, "5433,5434")]).unwrap();
        assert_eq!(c.db.servers, vec![server("pg-a", 5433), server("pg-b", 5434)]);
        let err = config(&[(DB_HOST, "pg-a,pg-b,pg-c"), (DB_PORT, "5433,5434")]).unwrap_err().to_string();
        assert!(err.contains(DB_PORT) && err.contains(DB_HOST), "{err}");
        let err = config(&[(DB_HOST, "pg-a,,pg-c")]).unwrap_err().to_string();
        assert!(err.contains(DB_HOST), "{err}");
        let err = config(&[(DB_PORT, "5432,x")]).unwrap_err().to_string();
        assert!(err.contains(DB_PORT), "{err}");
    }
}
