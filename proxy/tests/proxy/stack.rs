//! A whole sidecar stack: PostgreSQL (shared cluster, fresh database), Redis, the
//! identity backend in this process, and N proxy replicas as real processes.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use quantaid_backend::config::{self as backend_config, Config as BackendConfig};
use quantaid_testkit::{free_port, ChildGuard, Link, Postgres, Redis};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

pub const ADMIN_TOKEN: &str = "proxy-test-admin-token";
pub const INTERNAL_TOKEN: &str = "proxy-test-internal-token";
pub const PASSWORD: &str = "correct horse battery";

async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = Postgres::shared().create_database(None).await.expect("template database");
            quantaid_backend::migrate(&backend_config(&name, 0)).await.expect("migrate template");
            name
        })
        .await
}

fn backend_config(db: &str, redis_port: u16) -> BackendConfig {
    let pg = Postgres::shared();
    let redis = if redis_port == 0 { "none".to_string() } else { format!("127.0.0.1:{redis_port}") };
    let vars: HashMap<&str, String> = [
        (backend_config::DB_HOST, pg.host().to_string()),
        (backend_config::DB_PORT, pg.port().to_string()),
        (backend_config::DB_USER, pg.user().to_string()),
        (backend_config::DB_NAME, db.to_string()),
        (backend_config::DB_POOL_MIN, "2".to_string()),
        (backend_config::DB_POOL_MAX, "20".to_string()),
        (backend_config::DB_MIGRATE_ON_START, "false".to_string()),
        (backend_config::BOOTSTRAP_ADMIN_TOKEN, ADMIN_TOKEN.to_string()),
        (backend_config::INTERNAL_TOKEN, INTERNAL_TOKEN.to_string()),
        (backend_config::REDIS_HOST, redis),
        (backend_config::BLOOM_WATERMARK_MARGIN_MS, "1000".to_string()),
        (backend_config::LISTEN_ADDR, "127.0.0.1:0".to_string()),
        (backend_config::METRICS_ADDR, "127.0.0.1:0".to_string()),
        (backend_config::SHUTDOWN_GRACE_SECS, "1".to_string()),
    ]
    .into_iter()
    .collect();
    BackendConfig::from_lookup(|k| vars.get(k).cloned()).expect("backend config")
}

pub struct Proxy {
    pub url: String,
    pub metrics_url: String,
    pub child: ChildGuard,
}

pub struct Stack {
    pub redis: Redis,
    /// The backend's own link to Redis, when the test cuts it (`Stack::start_with_backend_link`).
    pub backend_link: Option<Link>,
    pub backend_url: String,
    pub backend_metrics_url: String,
    pub proxies: Vec<Proxy>,
    pub http: reqwest::Client,
    _backend_stop: tokio::sync::oneshot::Sender<()>,
}

impl Stack {
    pub async fn start(replicas: usize) -> Stack {
        Stack::start_inner(replicas, false).await
    }

    /// As `start`, with the backend reaching Redis through a [`Link`] the test can cut
    /// while the proxies keep their own connections.
    pub async fn start_with_backend_link(replicas: usize) -> Stack {
        Stack::start_inner(replicas, true).await
    }

    async fn start_inner(replicas: usize, link: bool) -> Stack {
        let redis = Redis::start().expect("redis");
        let backend_link = link.then(|| Link::start(redis.port()).expect("link to redis"));
        let db = Postgres::shared().create_database(Some(template().await)).await.expect("database");
        let config = backend_config(&db, backend_link.as_ref().map_or(redis.port(), Link::port));
        let api = quantaid_backend::http::listen(([127, 0, 0, 1], 0).into()).unwrap();
        let metrics = quantaid_backend::http::listen(([127, 0, 0, 1], 0).into()).unwrap();
        let backend_addr = api.local_addr().unwrap();
        let backend_metrics_url = format!("http://{}/metrics", metrics.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = quantaid_backend::run(api, metrics, config, async { let _ = stopped.await; }).await;
        });
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        let mut stack = Stack {
            redis,
            backend_link,
            backend_url: format!("http://{backend_addr}"),
            backend_metrics_url,
            proxies: Vec::new(),
            http,
            _backend_stop: stop,
        };
        for _ in 0..replicas {
            let proxy = stack.spawn_proxy(backend_addr, &[]).await;
            stack.proxies.push(proxy);
        }
        stack
    }

    /// Starts one more proxy process with extra environment.
    pub async fn spawn_proxy(&self, backend: std::net::SocketAddr, extra: &[(&str, &str)]) -> Proxy {
        let (port, metrics_port) = (free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quantaid-proxy"));
        cmd.env_clear()
            .env("QUANTAID_PROXY_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("QUANTAID_PROXY_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("QUANTAID_BACKEND_ADDR", backend.to_string())
            .env("REDIS_HOST", format!("127.0.0.1:{}", self.redis.port()))
            .env("QUANTAID_INTERNAL_TOKEN", INTERNAL_TOKEN)
            .env("QUANTAID_BOOTSTRAP_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("QUANTAID_BLOOM_CATCH_UP_MS", "200")
            .env("QUANTAID_REDIS_BREAKER_OPEN_MS", "300")
            .env("QUANTAID_PROXY_THREADS", "2")
            .env("QUANTAID_LOG_LEVEL", "warn")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = ChildGuard::spawn(&mut cmd).expect("spawn quantaid-proxy");
        let proxy = Proxy { url: format!("http://127.0.0.1:{port}"), metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"), child };
        for _ in 0..500 {
            if self.http.get(format!("{}/health", proxy.url)).send().await.is_ok_and(|r| r.status().is_success()) {
                return proxy;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("proxy did not become ready");
    }

    pub fn backend_addr(&self) -> std::net::SocketAddr {
        self.backend_url.trim_start_matches("http://").parse().unwrap()
    }

    pub fn at(&self, replica: usize, path: &str) -> String {
        format!("{}{path}", self.proxies[replica].url)
    }

    /// Creates a user through replica 0; returns its id.
    pub async fn create_user(&self, username: &str) -> String {
        let body = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD});
        let r = self.http.post(self.at(0, "/v1/users")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    /// Creates a user on the backend directly (for stacks with no replica).
    pub async fn create_user_direct(&self, username: &str) -> String {
        let body = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD});
        let r = self.http.post(format!("{}/v1/users", self.backend_url)).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    pub async fn login(&self, replica: usize, username: &str) -> String {
        let body = json!({"username": username, "password": PASSWORD});
        let r = self.http.post(self.at(replica, "/v1/auth/login")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["session_token"].as_str().unwrap().to_string()
    }

    pub async fn create_client(&self, grants: &[&str], scopes: &[&str]) -> (String, String) {
        let body = json!({"name": "proxy test", "grant_types": grants, "scopes": scopes});
        let r = self.http.post(self.at(0, "/v1/clients")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        let c: Value = r.json().await.unwrap();
        (c["client_id"].as_str().unwrap().to_string(), c["client_secret"].as_str().unwrap().to_string())
    }

    /// A client-credentials access token, issued through `replica`.
    pub async fn issue(&self, replica: usize, client: &(String, String)) -> String {
        let r = self.http.post(self.at(replica, "/oauth/token")).basic_auth(&client.0, Some(&client.1))
            .form(&[("grant_type", "client_credentials")]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
    }

    pub async fn introspect(&self, replica: usize, client: &(String, String), token: &str) -> (StatusCode, Value) {
        let r = self.http.post(self.at(replica, "/oauth/introspect")).basic_auth(&client.0, Some(&client.1))
            .form(&[("token", token)]).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn revoke(&self, replica: usize, client: &(String, String), token: &str) {
        let r = self.http.post(self.at(replica, "/oauth/revoke")).basic_auth(&client.0, Some(&client.1))
            .form(&[("token", token)]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    pub async fn session(&self, replica: usize, token: &str) -> StatusCode {
        self.http.get(self.at(replica, "/v1/auth/session")).bearer_auth(token).send().await.unwrap().status()
    }

    pub async fn backend_metric(&self, sample: &str) -> f64 {
        metric(&self.http, &self.backend_metrics_url, sample).await
    }

    pub async fn proxy_metric(&self, replica: usize, sample: &str) -> f64 {
        metric(&self.http, &self.proxies[replica].metrics_url, sample).await
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

async fn metric(http: &reqwest::Client, url: &str, sample: &str) -> f64 {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// Waits (bounded) until `f` holds; for state that converges, such as a Bloom filter
/// catching up. Not a speed assertion: the bound only detects "never".
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}
