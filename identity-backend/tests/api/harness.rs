//! A real backend, in-process, on port-0 listeners, over its own fresh database in the
//! shared test PostgreSQL cluster.

use std::collections::HashMap;

use quantaid_backend::config::{self, Config};
use quantaid_testkit::Postgres;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

pub const ADMIN_TOKEN: &str = "test-bootstrap-admin-token";
pub const PASSWORD: &str = "correct horse battery";
pub const INTERNAL_TOKEN: &str = "test-internal-token";

/// The migrated template every test database is copied from.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let pg = Postgres::shared();
            let name = pg.create_database(None).await.expect("create template database");
            let config = base_config(&name, &[]);
            quantaid_backend::migrate(&config).await.expect("migrate template");
            name
        })
        .await
}

/// The test configuration over database `db` of the shared cluster, with `overrides`.
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

    /// Starts with config variables overridden, e.g. `&[(config::DB_POOL_MAX, "2")]`.
    pub async fn with(overrides: &[(&str, &str)]) -> TestApp {
        let db_name = Postgres::shared().create_database(Some(template().await)).await.expect("test database");
        Self::with_config(base_config(&db_name, overrides), db_name).await
    }

    /// Starts with a complete configuration (e.g. over other clusters than the shared one);
    /// `db_name` is what [`TestApp::pg`] connects to.
    pub async fn with_config(config: Config, db_name: String) -> TestApp {
        let api = quantaid_backend::http::listen(([127, 0, 0, 1], 0).into()).unwrap();
        let metrics = quantaid_backend::http::listen(([127, 0, 0, 1], 0).into()).unwrap();
        let url = format!("http://{}", api.local_addr().unwrap());
        let metrics_url = format!("http://{}/metrics", metrics.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            if let Err(e) = quantaid_backend::run(api, metrics, config, async { let _ = rx.await; }).await {
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

    /// Creates a user with [`PASSWORD`]; returns its id.
    pub async fn create_user(&self, username: &str) -> String {
        let body = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD});
        let (status, user) = json_of(self.post_json("/v1/users", Some(ADMIN_TOKEN), body).await).await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        user["id"].as_str().unwrap().to_string()
    }

    /// Logs in (no MFA); returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let (status, body) =
            json_of(self.post_json("/v1/auth/login", None, json!({"username": username, "password": password})).await)
                .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["session_token"].as_str().unwrap().to_string()
    }

    /// Registers a client; returns `(client_id, client_secret)`.
    pub async fn create_client(&self, grants: &[&str], scopes: &[&str]) -> (String, String) {
        let body = json!({"name": "test client", "grant_types": grants, "scopes": scopes, "redirect_uris": []});
        let (status, c) = json_of(self.post_json("/v1/clients", Some(ADMIN_TOKEN), body).await).await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
        (c["client_id"].as_str().unwrap().to_string(), c["client_secret"].as_str().unwrap().to_string())
    }

    /// `POST /oauth/token` with Basic client auth.
    pub async fn token(&self, client: &(String, String), form: &[(&str, &str)]) -> (StatusCode, Value) {
        json_of(self.post_form("/oauth/token", Some((&client.0, &client.1)), form).await).await
    }

    pub async fn introspect(&self, client: &(String, String), token: &str) -> Value {
        let (status, body) =
            json_of(self.post_form("/oauth/introspect", Some((&client.0, &client.1)), &[("token", token)]).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The value of one sample in the backend's metrics text, e.g.
    /// `quantaid_logins_total{result="success"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.http.get(&self.metrics_url).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or(0.0)
    }
}

/// Status and JSON body; panics (failing the test) on a non-JSON body.
pub async fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body with {status}: {text:?}"));
    (status, body)
}

/// Asserts the RFC 6749 error shape and returns the code.
pub async fn error_of(r: Response, expected: StatusCode) -> String {
    let (status, body) = json_of(r).await;
    assert_eq!(status, expected, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body["error"].as_str().expect("error code").to_string()
}
