//! With production-like volumes loaded, the hot queries the code really runs use the
//! indexes docs/design.md requires (and never a sequential scan).

use quantaid_backend::storage::audit::{build_query, AuditQuery};
use quantaid_backend::storage::tokens::{ACCESS_TOKEN_BY_DIGEST, REFRESH_BY_DIGEST};
use quantaid_backend::storage::users::USER_BY_USERNAME;
use tokio_postgres::types::ToSql;

use quantaid_test_stack::*;

const LOAD: &str = "
INSERT INTO users (id, username, email, password_hash, created_at, updated_at)
  SELECT gen_random_uuid(), 'user' || i, 'user' || i || '@example.com', 'x', now() - i * interval '1 second', now()
  FROM generate_series(1, 100000) i;
INSERT INTO oauth_clients (client_id, secret_digest, name, grant_types, scopes, redirect_uris, created_at)
  VALUES ('plan-client', '\\x00', 'plans', '{client_credentials}', '{read}', '{}', now());
INSERT INTO oauth_tokens (id, access_token, refresh_token, family_id, client_id, user_id, scope, grant_type,
                          created_at, expires_at, refresh_expires_at)
  SELECT gen_random_uuid(), sha256(('a' || i)::bytea), CASE WHEN i % 2 = 0 THEN sha256(('r' || i)::bytea) END,
         gen_random_uuid(), 'plan-client', NULL, 'read', 'client_credentials', now(), now() + interval '1 hour',
         now() + interval '1 day'
  FROM generate_series(1, 200000) i;
INSERT INTO audit_logs (id, user_id, action, ip_address, details, created_at)
  SELECT gen_random_uuid(), ids.a[1 + i % 5000],
         (ARRAY['login.success', 'login.failure', 'logout', 'token.issue'])[1 + i % 4],
         ('10.' || (i % 200) || '.' || (i % 250) || '.1')::inet, '{}', now() - i * interval '1 second'
  FROM generate_series(1, 500000) i, (SELECT array_agg(id) AS a FROM (SELECT id FROM users LIMIT 5000) u) ids;
ANALYZE;
";

async fn plan(pg: &tokio_postgres::Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> String {
    let rows = pg.query(&format!("EXPLAIN {sql}"), params).await.unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

fn assert_uses(plan: &str, index: &str) {
    assert!(plan.contains(index), "expected {index} in plan:\n{plan}");
    assert!(!plan.contains("Seq Scan"), "sequential scan in plan:\n{plan}");
}

#[tokio::test]
async fn hot_queries_use_the_required_indexes() {
    let app = TestApp::start().await;
    let pg = app.pg().await;
    pg.batch_execute(LOAD).await.unwrap();
    let counts = pg
        .query_one("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM oauth_tokens), (SELECT count(*) FROM audit_logs)", &[])
        .await
        .unwrap();
    assert!(counts.get::<_, i64>(0) >= 100_000 && counts.get::<_, i64>(1) >= 200_000 && counts.get::<_, i64>(2) >= 500_000);

    // Login by username.
    let p = plan(&pg, USER_BY_USERNAME.sql, &[&"user4242"]).await;
    assert_uses(&p, "idx_users_username");

    // Token by digest (introspection, bearer auth) and refresh token by digest.
    let digest: Vec<u8> = pg.query_one("SELECT sha256('a4242'::bytea)", &[]).await.unwrap().get(0);
    let p = plan(&pg, ACCESS_TOKEN_BY_DIGEST.sql, &[&digest, &chrono::Utc::now()]).await;
    assert_uses(&p, "idx_oauth_tokens_access_token");
    let digest: Vec<u8> = pg.query_one("SELECT sha256('r4242'::bytea)", &[]).await.unwrap().get(0);
    let p = plan(&pg, REFRESH_BY_DIGEST.sql, &[&digest]).await;
    assert_uses(&p, "idx_oauth_tokens_refresh_token");

    // Audit by user + action, and by IP: the SQL the endpoint builds.
    let user_id: uuid::Uuid = pg.query_one("SELECT user_id FROM audit_logs LIMIT 1", &[]).await.unwrap().get(0);
    for (filter, index) in [
        (
            AuditQuery { user_id: Some(user_id), action: Some("login.failure".into()), limit: 51, ..Default::default() },
            "idx_audit_logs_user_action",
        ),
        (AuditQuery { ip_address: Some("10.42.42.1".parse().unwrap()), limit: 51, ..Default::default() }, "idx_audit_logs_ip"),
    ] {
        let (sql, params) = build_query(&filter);
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        assert_uses(&plan(&pg, &sql, &refs).await, index);
    }
}
