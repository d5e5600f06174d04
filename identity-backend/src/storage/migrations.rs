//! Versioned schema migrations, embedded in the binary.
//!
//! They run at start-up (unless disabled) or through `quantaid-backend migrate`. An
//! advisory lock serialises replicas that start together; each migration runs in its
//! own transaction and is recorded in `schema_migrations`.

use anyhow::Context;
use tokio_postgres::Client;

/// (version, name, SQL). Append only: a released migration never changes.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/0001_initial.sql")),
    (2, "cache_invalidations", include_str!("../../migrations/0002_cache_invalidations.sql")),
    (3, "created_at_indexes", include_str!("../../migrations/0003_created_at_indexes.sql")),
    (4, "session_reauthentication", include_str!("../../migrations/0004_session_reauthentication.sql")),
    (5, "client_lifecycle", include_str!("../../migrations/0005_client_lifecycle.sql")),
];

/// Arbitrary but fixed key for `pg_advisory_lock`.
const MIGRATION_LOCK_KEY: i64 = 0x5141_4944_4d49_4752;

/// Applies every migration not yet recorded; returns how many ran.
pub async fn migrate(client: &mut Client) -> anyhow::Result<usize> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    let result = apply_pending(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    result
}

async fn apply_pending(client: &mut Client) -> anyhow::Result<usize> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> = client.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get("version")).collect();
    let mut ran = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.with_context(|| format!("migration {version} ({name})"))?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        ran += 1;
    }
    Ok(ran)
}
