//! Operations: health, readiness, metrics, overload behaviour, logs and process life.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use quantaid_backend::config;
use quantaid_backend::security::token::{self, TokenKind};
use quantaid_testkit::{free_port, Postgres};
use reqwest::StatusCode;
use serde_json::{json, Value};

use quantaid_test_stack::*;

#[tokio::test]
async fn health_ready_and_metrics() {
    let app = TestApp::start().await;
    assert_eq!(json_of(app.get("/health", None).await).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(json_of(app.get("/ready", None).await).await, (StatusCode::OK, json!({"status": "ready"})));
    let id = app.create_user("alice").await;
    app.get(&format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).await;
    app.login("alice", PASSWORD).await;

    let text = app.http.get(&app.metrics_url).send().await.unwrap().text().await.unwrap();
    for name in [
        "quantaid_http_requests_total",
        "quantaid_http_request_duration_seconds_bucket",
        "quantaid_db_queries_total",
        "quantaid_db_query_duration_seconds_bucket",
        "quantaid_db_pool_connections",
        "quantaid_logins_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    // Labels are route templates, never raw ids; the smallest bucket is 100 µs.
    assert!(text.contains(r#"quantaid_http_requests_total{method="GET",path="/v1/users/{id}",status="200"} 1"#), "{text}");
    assert!(!text.contains(&id), "a user id leaked into metric labels");
    assert!(text.contains(r#"le="0.0001""#));
    assert!(text.contains(r#"quantaid_db_pool_connections{state="max"} 10"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_pool_answers_503_quickly_and_recovers() {
    let app = TestApp::with(&[
        (config::DB_POOL_MIN, "1"),
        (config::DB_POOL_MAX, "1"),
        (config::DB_POOL_WAIT_MS, "300"),
        (config::DB_STATEMENT_TIMEOUT_MS, "1500"),
    ])
    .await;
    let id = app.create_user("alice").await;
    let path = format!("/v1/users/{id}");

    // Hold a lock so the backend's only connection blocks inside a query.
    let mut locker = app.pg().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.unwrap();

    let blocked = app.get(&path, Some(ADMIN_TOKEN));
    let waiting = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.get(&path, Some(ADMIN_TOKEN)).await
    };
    // The timeout only detects a hang; it is not a speed assertion.
    let (blocked, waiting) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(blocked, waiting) }).await.expect("requests must not hang");
    for r in [waiting, blocked] {
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(error_of(r, StatusCode::SERVICE_UNAVAILABLE).await, "temporarily_unavailable");
    }
    assert!(app.metric("quantaid_db_pool_wait_timeouts_total").await >= 1.0);

    tx.rollback().await.unwrap();
    let r = app.get(&path, Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK, "service recovers by itself");
}

#[tokio::test]
async fn an_unreachable_database_is_503_never_401() {
    let dead_port = free_port().to_string();
    let app = TestApp::with(&[(config::DB_PORT, &dead_port), (config::DB_POOL_MIN, "0"), (config::DB_POOL_WAIT_MS, "500")]).await;
    assert_eq!(app.get("/health", None).await.status(), StatusCode::OK, "liveness ignores dependencies");
    assert_eq!(error_of(app.get("/ready", None).await, StatusCode::SERVICE_UNAVAILABLE).await, "temporarily_unavailable");
    let r = app.post_json("/v1/auth/login", None, json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_of(r, StatusCode::SERVICE_UNAVAILABLE).await, "temporarily_unavailable");
    // A well-formed session token needs the database: "cannot check" is 503, not 401.
    let session = token::generate(TokenKind::Session, chrono::Utc::now());
    let r = app.get("/v1/auth/session", Some(&session)).await;
    assert_eq!(error_of(r, StatusCode::SERVICE_UNAVAILABLE).await, "temporarily_unavailable");
}

const BINARY: &str = env!("CARGO_BIN_EXE_quantaid-backend");

/// The real binary's environment: a new database, migrated by the binary's `migrate`
/// subcommand. Returns the environment, the API's base URL and the database's name.
async fn migrated_binary_env(pg: &Postgres) -> (Vec<(&'static str, String)>, String, String) {
    let db = pg.create_database(None).await.unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let env = vec![
        (config::DB_HOST, pg.host().to_string()),
        (config::DB_PORT, pg.port().to_string()),
        (config::DB_USER, pg.user().to_string()),
        (config::DB_NAME, db.clone()),
        (config::DB_POOL_MIN, "1".to_string()),
        (config::BOOTSTRAP_ADMIN_TOKEN, ADMIN_TOKEN.to_string()),
        (config::LISTEN_ADDR, format!("127.0.0.1:{port}")),
        (config::METRICS_ADDR, format!("127.0.0.1:{metrics_port}")),
        (config::DB_MIGRATE_ON_START, "false".to_string()),
    ];
    let status = Command::new(BINARY).arg("migrate").envs(env.clone()).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "migrate failed");
    (env, format!("http://127.0.0.1:{port}"), db)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if http.get(format!("{base}/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("backend did not become ready");
}

/// Creates the user `alice` through the API; her id.
async fn create_alice(http: &reqwest::Client, base: &str) -> String {
    let body = json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD});
    let r = http.post(format!("{base}/v1/users")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// The real binary, with the default argon2id parameters (19 MiB per hash): a burst of
/// logins keeps its memory within the chart's request for the container (160 Mi), not
/// a retained hash block per thread that ever hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_keeps_the_binary_within_its_memory_request() {
    let (env, base, _) = migrated_binary_env(Postgres::shared()).await;
    let mut child = Command::new(BINARY).envs(env).stdout(Stdio::null()).spawn().unwrap();
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    create_alice(&http, &base).await;
    // 4 clients, 50 logins each: more hashes at once than there are hash workers, so
    // the blocking pool spreads them over many threads.
    let clients = (0..4).map(|_| {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            for _ in 0..50 {
                let login = json!({"username": "alice", "password": PASSWORD});
                let r = http.post(format!("{base}/v1/auth/login")).json(&login).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.unwrap();
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let peak_kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    assert!(peak_kib < 160 * 1024, "peak RSS {} MiB after 200 logins", peak_kib / 1024);
}

/// The real binary: migrations by subcommand, JSON logs with the caller's trace id and
/// no secrets, spans exported over OTLP in the caller's trace, and a clean exit on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_json_with_trace_ids_and_stops_on_sigterm() {
    let pg = Postgres::shared();
    let (env, base, db) = migrated_binary_env(pg).await;
    let status = Command::new(BINARY).arg("migrate").envs(env.clone()).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "migrate is idempotent");
    let versions: i64 = pg.connect(&db).await.unwrap().query_one("SELECT count(*) FROM schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(versions as usize, quantaid_backend::storage::migrations::MIGRATIONS.len());

    let (collector, exported) = otlp_collector().await;
    let mut child = Command::new(BINARY)
        .envs(env)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;

    let user_id = create_alice(&http, &base).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = http
        .post(format!("{base}/v1/auth/login"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let session = r.json::<Value>().await.unwrap()["session_token"].as_str().unwrap().to_string();

    // SIGTERM: drains and exits cleanly.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");

    let lines = lines.join().unwrap();
    let records: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    for r in &records {
        for field in ["timestamp", "level", "message"] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
    }
    let login_lines: Vec<&Value> = records.iter().filter(|r| r["trace_id"] == trace).collect();
    assert!(!login_lines.is_empty(), "the incoming trace id is carried into the logs");
    let logged_in = login_lines.iter().find(|r| r["message"] == "user logged in").expect("login log line");
    assert_eq!(logged_in["user_id"], user_id.as_str());
    assert_eq!(logged_in["ip_address"], "127.0.0.1");
    // The exported spans belong to the caller's trace (the id travels as 16 raw bytes).
    let trace_bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap()).collect();
    let exported = exported.lock().unwrap().clone();
    assert!(
        exported.iter().any(|body| body.windows(16).any(|w| w == trace_bytes.as_slice())),
        "no exported span in trace {trace} ({} OTLP posts)",
        exported.len()
    );
    let all = lines.join("\n");
    assert!(!all.contains(PASSWORD) && !all.contains(&session) && !all.contains(ADMIN_TOKEN), "a secret reached the logs");
}
