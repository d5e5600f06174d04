//! A whole sidecar stack: the identity backend in this process over a fresh database
//! (`quantaid_test_stack::TestApp`), Redis, and N proxy replicas as real processes.

use std::process::{Command, Stdio};
use std::time::Duration;

use quantaid_backend::config;
use quantaid_test_stack::{api, TestApp};
use quantaid_testkit::{free_port, ChildGuard, Link, Redis};
use reqwest::StatusCode;
use serde_json::Value;

pub use quantaid_test_stack::{ADMIN_TOKEN, INTERNAL_TOKEN, PASSWORD};

pub struct Proxy {
    pub url: String,
    pub metrics_url: String,
    pub child: ChildGuard,
}

pub struct Stack {
    pub redis: Redis,
    /// The backend's own link to Redis, when the test cuts it (`Stack::start_with_backend_link`).
    pub backend_link: Option<Link>,
    pub proxies: Vec<Proxy>,
    pub http: reqwest::Client,
    pub backend: TestApp,
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
        let backend_redis = format!("127.0.0.1:{}", backend_link.as_ref().map_or(redis.port(), Link::port));
        let backend = TestApp::with(&[
            (config::DB_POOL_MIN, "2"),
            (config::DB_POOL_MAX, "20"),
            (config::REDIS_HOST, &backend_redis),
            (config::BLOOM_WATERMARK_MARGIN_MS, "1000"),
        ])
        .await;
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        let mut stack = Stack { redis, backend_link, proxies: Vec::new(), http, backend };
        for _ in 0..replicas {
            let proxy = stack.spawn_proxy(stack.backend_addr(), &[]).await;
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
            .env("QUANTAID_REDIS_HOST", format!("127.0.0.1:{}", self.redis.port()))
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
        let proxy =
            Proxy { url: format!("http://127.0.0.1:{port}"), metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"), child };
        // Ready also means the first Bloom refresh has been tried (whatever its outcome):
        // it runs beside the listener at start-up, and a test comparing metric pages
        // before and after would otherwise see its series appear in between.
        let first_refresh = r#"quantaid_upstream_request_duration_seconds_count{path="/internal/v1/bloom-snapshot"}"#;
        for _ in 0..500 {
            if self.http.get(format!("{}/health", proxy.url)).send().await.is_ok_and(|r| r.status().is_success())
                && self.page_has(&proxy.metrics_url, first_refresh).await
            {
                return proxy;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("proxy did not become ready");
    }

    /// Whether the page at `url` answers and contains `text`.
    async fn page_has(&self, url: &str, text: &str) -> bool {
        let Ok(r) = self.http.get(url).send().await else { return false };
        r.text().await.is_ok_and(|page| page.contains(text))
    }

    pub fn backend_addr(&self) -> std::net::SocketAddr {
        self.backend.addr()
    }

    pub fn at(&self, replica: usize, path: &str) -> String {
        format!("{}{path}", self.proxies[replica].url)
    }

    /// Creates a user through replica 0; returns its id.
    pub async fn create_user(&self, username: &str) -> String {
        api::create_user(&self.http, &self.proxies[0].url, username).await
    }

    /// Logs in with [`PASSWORD`] through `replica`; returns the session token.
    pub async fn login(&self, replica: usize, username: &str) -> String {
        api::login(&self.http, &self.proxies[replica].url, username, PASSWORD).await
    }

    /// Registers a client through replica 0; returns `(client_id, client_secret)`.
    pub async fn create_client(&self, grants: &[&str], scopes: &[&str]) -> (String, String) {
        api::create_client(&self.http, &self.proxies[0].url, grants, scopes).await
    }

    /// A client-credentials access token, issued through `replica`.
    pub async fn issue(&self, replica: usize, client: &(String, String)) -> String {
        let r = self
            .http
            .post(self.at(replica, "/oauth/token"))
            .basic_auth(&client.0, Some(&client.1))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
    }

    pub async fn introspect(&self, replica: usize, client: &(String, String), token: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.at(replica, "/oauth/introspect"))
            .basic_auth(&client.0, Some(&client.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn revoke(&self, replica: usize, client: &(String, String), token: &str) {
        let r = self
            .http
            .post(self.at(replica, "/oauth/revoke"))
            .basic_auth(&client.0, Some(&client.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    pub async fn session(&self, replica: usize, token: &str) -> StatusCode {
        self.http.get(self.at(replica, "/v1/auth/session")).bearer_auth(token).send().await.unwrap().status()
    }

    pub async fn backend_metric(&self, sample: &str) -> f64 {
        self.backend.metric(sample).await
    }

    pub async fn proxy_metric(&self, replica: usize, sample: &str) -> f64 {
        api::metric(&self.http, &self.proxies[replica].metrics_url, sample).await
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

/// Requests the backend has served, not counting the proxies' own Bloom refreshes and
/// health probes.
pub async fn backend_requests(stack: &Stack) -> f64 {
    let text = api::metrics_text(&stack.http, &stack.backend.metrics_url).await;
    text.lines()
        .filter(|l| l.starts_with("quantaid_http_requests_total{") && !l.contains("bloom-snapshot") && !l.contains("\"/health\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
