//! Database high availability: `DB_HOST` lists several servers, and the backend follows a
//! failover (a promoted standby, a dead or demoted primary) without a restart or a
//! configuration change. The timed form of this is the `db-primary-kill` chaos experiment
//! (docs/chaos.md); these tests check the behaviour, never its speed.

use std::time::{Duration, Instant};

use quantaid_backend::config;
use quantaid_testkit::Postgres;
use reqwest::StatusCode;
use serde_json::json;

use quantaid_test_stack::*;

const STANDBY_NAME: &str = "quantaid_standby";
/// Generous bound for the backend to reach the new primary (the experiment measures it).
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// A primary with the backend's schema in database `quantaid`, and its streaming replica.
/// With `synchronous`, a commit is acknowledged only once the replica has it.
async fn replicated_pair(synchronous: bool) -> (Postgres, Postgres) {
    // Nothing else runs on this runtime yet, so the blocking start-ups may block it.
    let primary = Postgres::start().expect("start primary");
    primary.connect("postgres").await.unwrap().batch_execute("CREATE DATABASE quantaid").await.unwrap();
    let migrate_config = app_config(&[&primary], &[]);
    quantaid_backend::migrate(&migrate_config).await.expect("migrate primary");
    let standby = primary.start_standby(STANDBY_NAME).expect("start standby");
    if synchronous {
        let admin = primary.connect("postgres").await.unwrap();
        // One statement per call: ALTER SYSTEM cannot run in the implicit transaction of a batch.
        for sql in [
            format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"),
            "ALTER SYSTEM SET synchronous_commit = 'on'".to_string(),
            "SELECT pg_reload_conf()".to_string(),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
        wait_until("the standby replicates synchronously", || async {
            let row = admin
                .query_opt("SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND sync_state = 'sync'", &[&STANDBY_NAME])
                .await
                .unwrap();
            row.is_some()
        })
        .await;
    }
    (primary, standby)
}

/// The backend's configuration over `servers` (in that order), database `quantaid`.
fn app_config(servers: &[&Postgres], overrides: &[(&str, &str)]) -> config::Config {
    let hosts = servers.iter().map(|s| s.host()).collect::<Vec<_>>().join(",");
    let ports = servers.iter().map(|s| s.port().to_string()).collect::<Vec<_>>().join(",");
    let mut vars = vec![(config::DB_HOST, hosts.as_str()), (config::DB_PORT, ports.as_str())];
    vars.extend_from_slice(overrides);
    base_config("quantaid", &vars)
}

async fn start_app(servers: &[&Postgres]) -> TestApp {
    TestApp::with_config(app_config(servers, &[(config::DB_POOL_MIN, "2"), (config::DB_POOL_WAIT_MS, "1000")]), "quantaid".into()).await
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + FAILOVER_BOUND;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {FAILOVER_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a user; `None` when the backend answered 503 (the only failure allowed while
/// there is no primary).
async fn try_create_user(app: &TestApp, username: &str) -> Option<String> {
    let body = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD});
    let r = app.post_json("/v1/users", Some(ADMIN_TOKEN), body).await;
    if r.status() == StatusCode::SERVICE_UNAVAILABLE {
        assert!(r.headers().contains_key("retry-after"), "a 503 says when to retry");
        return None;
    }
    let (status, user) = json_of(r).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    Some(user["id"].as_str().unwrap().to_string())
}

async fn is_in_recovery(pg: &Postgres) -> bool {
    pg.connect("postgres").await.unwrap().query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_standby_listed_first_is_passed_over_for_the_primary() {
    let (primary, standby) = replicated_pair(false).await;
    let app = start_app(&[&standby, &primary]).await;
    assert_eq!(app.get("/ready", None).await.status(), StatusCode::OK);
    let id = app.create_user("alice").await;
    let on_primary = primary.connect("quantaid").await.unwrap();
    let found = on_primary.query_opt("SELECT 1 FROM users WHERE id = $1::text::uuid", &[&id]).await.unwrap();
    assert!(found.is_some(), "the write went to the primary");
}

/// The `db-primary-kill` sequence: the primary crashes, the standby is promoted, and the
/// backend writes to it by itself; with synchronous replication, no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_primary_dies_the_promoted_standby_is_found_and_no_acknowledged_write_is_lost() {
    let (primary, standby) = replicated_pair(true).await;
    let app = start_app(&[&primary, &standby]).await;
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        acknowledged.push(app.create_user(&format!("before{i}")).await);
    }

    primary.kill();
    // Until the promotion there is no primary: writes are 503 with Retry-After, never 500
    // (or 201, if the dying primary and its standby still took this one).
    try_create_user(&app, "during").await;
    standby.promote().await.unwrap();

    let mut n = 0;
    wait_until("a write succeeds on the promoted standby", || {
        n += 1;
        let app = &app;
        async move { try_create_user(app, &format!("after{n}")).await.is_some() }
    })
    .await;
    assert_eq!(app.get("/ready", None).await.status(), StatusCode::OK);
    for id in &acknowledged {
        let r = app.get(&format!("/v1/users/{id}"), Some(ADMIN_TOKEN)).await;
        assert_eq!(r.status(), StatusCode::OK, "user {id}, acknowledged before the crash, survived it");
    }
}

/// A primary that stops taking writes while the pool holds connections to it (demoted, or
/// fenced by an operator): those connections are dropped before use and the next write goes
/// to the new primary at once, with no error answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_a_demoted_primary_are_dropped_before_they_fail_a_request() {
    let (primary, standby) = replicated_pair(false).await;
    let app = start_app(&[&primary, &standby]).await;
    // Several pooled connections to the primary.
    let names: Vec<String> = (0..6).map(|i| format!("warm{i}")).collect();
    futures::future::join_all(names.iter().map(|n| app.create_user(n))).await;

    standby.promote().await.unwrap();
    assert!(!is_in_recovery(&standby).await);
    let old = primary.connect("postgres").await.unwrap();
    old.batch_execute("ALTER SYSTEM SET default_transaction_read_only = on").await.unwrap();
    old.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    wait_until("the old primary refuses writes", || async {
        let fresh = primary.connect("postgres").await.unwrap();
        let row = fresh.query_one("SHOW default_transaction_read_only", &[]).await.unwrap();
        row.get::<_, String>(0) == "on"
    })
    .await;
    // The reload reaches the pooled sessions through their postmaster's signal.
    tokio::time::sleep(Duration::from_millis(200)).await;

    for i in 0..6 {
        let id = try_create_user(&app, &format!("after{i}")).await;
        let id = id.expect("no request fails once a writable primary exists");
        let on_new = standby.connect("quantaid").await.unwrap();
        let found = on_new.query_opt("SELECT 1 FROM users WHERE id = $1::text::uuid", &[&id]).await.unwrap();
        assert!(found.is_some(), "the write went to the new primary");
    }
}

/// Kills a cluster when the test ends, however it ends: a frozen server would otherwise
/// outlive the test process (it cannot act on the signal it gets when the tests exit).
struct KillOnDrop<'a>(&'a Postgres);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        self.0.kill();
    }
}

/// A primary that hangs (its host freezes: connections stay open, new ones are accepted by
/// the kernel, nothing answers) is given up too: pooled connections to it are dropped once
/// their check times out, and a new connection stops waiting for it and tries the next
/// server, so writes reach the promoted standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_is_given_up_for_the_promoted_standby() {
    let (primary, standby) = replicated_pair(false).await;
    let _kill = KillOnDrop(&primary);
    let app = start_app(&[&primary, &standby]).await;
    let names: Vec<String> = (0..6).map(|i| format!("warm{i}")).collect();
    futures::future::join_all(names.iter().map(|n| app.create_user(n))).await;

    primary.freeze();
    standby.promote().await.unwrap();
    let mut n = 0;
    wait_until("a write succeeds on the promoted standby", || {
        n += 1;
        let app = &app;
        async move { try_create_user(app, &format!("after{n}")).await.is_some() }
    })
    .await;
}
