//! The backend in this process, on port-0 listeners, over its own fresh database in
//! testkit's shared PostgreSQL cluster.

use std::collections::HashMap;
use std::net::SocketAddr;

use quantaid_backend::config::{self, Config};
use quantaid_testkit::Postgres;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::api::{self, json_of};
use crate::{ADMIN_TOKEN, INTERNAL_TOKEN};

/// The migrated template every test database is copied from: migrating once per test
/// process and copying is much faster than migrating every test's database.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = Postgres::shared().create_database(None).await.expect("create template database");
            quantaid_backend::migrate(&base_config(&name, &[])).await.expect("migrate template");
            name
        })
        .await
}

/// The test configuration over database `db` of the shared cluster, with `overrides`
/// (variable name, value) applied on top. Redis is off unless an override names one.
pub fn base_config(db: &str, overrides: &[(&str, &str)]) -> Config {
    let pg = Postgres::shared();
    let mut vars: HashMap<String, String> = [
        (config::DB_HOST, pg.host().to_string()),
        (config::DB_PORT, pg.port().to_string()),
        (config::DB_USER, pg.user().to_string()),
        (config::DB_NAME, db.to_string()),
        (config::DB_POOL_MIN, "1".to_string()),
        (config::DB_POOL_MAX, "10".to_string()),
        (config::DB_MIGRATE_ON_START, "false".to_string()),
        (config::BOOTSTRAP_ADMIN_TOKEN, ADMIN_TOKEN.to_string()),
        (config::LISTEN_ADDR, "127.0.0.1:0".to_string()),
        (config::METRICS_ADDR, "127.0.0.1:0".to_string()),
        (config::SHUTDOWN_GRACE_SECS, "1".to_string()),
        (config::REDIS_HOST, config::REDIS_DISABLED.to_string()),
        (config::INTERNAL_TOKEN, INTERNAL_TOKEN.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| vars.get(k).cloned()).expect("test config")
}

/// A running backend. Dropping it shuts the backend down.
pub struct TestApp {
    pub url: String,
    pub metrics_url: String,
    pub http: reqwest::Client,
    pub db_name: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::with(&[]).await
    }

    /// Starts over a fresh copy of the template with config variables overridden, e.g.
    /// `&[(config::DB_POOL_MAX, "2")]`.
    pub async fn with(overrides: &[(&str, &str)]) -> TestApp {
        let db_name = Postgres::shared().create_database(Some(template().await)).await.expect("test database");
        Self::with_config(base_config(&db_name, overrides), db_name).await
    }

    /// Starts with a complete configuration (e.g. over other clusters than the shared one);
    /// `db_name` is what [`TestApp::pg`] connects to. Returns once `/health` answers.
    pub async fn with_config(config: Config, db_name: String) -> TestApp {
        let api = quantaid_backend::http::listen(([127, 0, 0, 1], 0).into()).unwrap();
        let metrics = quantaid_backend::http::listen(([127, 0, 0, 1], 0).into()).unwrap();
        let url = format!("http://{}", api.local_addr().unwrap());
        let metrics_url = format!("http://{}/metrics", metrics.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            if let Err(e) = quantaid_backend::run(api, metrics, config, async {
                let _ = rx.await;
            })
            .await
            {
                eprintln!("backend exited: {e:#}");
            }
        });
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        let app = TestApp { url, metrics_url, http, db_name, _shutdown: tx };
        for _ in 0..200 {
            if let Ok(r) = app.http.get(app.url("/health")).send().await {
                if r.status().is_success() {
                    return app;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("backend did not come up");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The API listener's address (what a proxy is pointed at).
    pub fn addr(&self) -> SocketAddr {
        self.url.trim_start_matches("http://").parse().unwrap()
    }

    /// A direct connection to this test's database, for assertions.
    pub async fn pg(&self) -> tokio_postgres::Client {
        Postgres::shared().connect(&self.db_name).await.expect("connect to test database")
    }

    pub fn request(&self, method: Method, path: &str, bearer: Option<&str>) -> RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match bearer {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn post_json(&self, path: &str, bearer: Option<&str>, body: Value) -> Response {
        self.request(Method::POST, path, bearer).json(&body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Response {
        self.request(Method::GET, path, bearer).send().await.unwrap()
    }

    pub async fn post_form(&self, path: &str, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> Response {
        let mut r = self.http.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            r = r.basic_auth(id, Some(secret));
        }
        r.send().await.unwrap()
    }

    /// Creates a user with [`crate::PASSWORD`]; returns its id.
    pub async fn create_user(&self, username: &str) -> String {
        api::create_user(&self.http, &self.url, username).await
    }

    /// Logs in (no MFA); returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        api::login(&self.http, &self.url, username, password).await
    }

    /// Registers a client; returns `(client_id, client_secret)`.
    pub async fn create_client(&self, grants: &[&str], scopes: &[&str]) -> (String, String) {
        api::create_client(&self.http, &self.url, grants, scopes).await
    }

    /// `POST /oauth/token` with Basic client auth.
    pub async fn token(&self, client: &(String, String), form: &[(&str, &str)]) -> (StatusCode, Value) {
        json_of(self.post_form("/oauth/token", Some((&client.0, &client.1)), form).await).await
    }

    pub async fn introspect(&self, client: &(String, String), token: &str) -> Value {
        let (status, body) = json_of(self.post_form("/oauth/introspect", Some((&client.0, &client.1)), &[("token", token)]).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The value of one sample in the backend's metrics text, e.g.
    /// `quantaid_logins_total{result="success"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        api::metric(&self.http, &self.metrics_url, sample).await
    }
}
