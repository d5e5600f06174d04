//! Seed data: 10,000 users and a set of OAuth clients.
//!
//! Through the API each user create costs an argon2 hash on the server (about 60 a
//! second on two cores, so nearly three minutes for 10k). So only the first user goes
//! through the API — the backend hashes its password with the parameters it runs with —
//! and the others are inserted into PostgreSQL with that same hash: every login still
//! costs the server exactly one full verification. Clients go through the admin API,
//! which is cheap and keeps their secrets real.

use anyhow::Context;
use tokio_postgres::NoTls;

use crate::client::{Api, OAuthClient};

pub fn username(i: usize) -> String {
    format!("loadtest-{i}")
}

/// Creates users `loadtest-0..n`; what the database runs with, for the report.
pub async fn users(api: &Api, admin_token: &str, database_url: &str, n: usize) -> anyhow::Result<String> {
    let (db, connection) = tokio_postgres::connect(database_url, NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    api.create_user(admin_token, &username(0)).await?;
    let hash: String = db
        .query_one("SELECT password_hash FROM users WHERE username = $1", &[&username(0)])
        .await
        .context("reading the first user's password hash")?
        .get(0);
    // UUIDv7 ids, as the backend makes them: the proxy's Bloom filter reads their time.
    let ids: Vec<uuid::Uuid> = (1..n).map(|_| uuid::Uuid::now_v7()).collect();
    let names: Vec<String> = (1..n).map(username).collect();
    let emails: Vec<String> = names.iter().map(|u| format!("{u}@loadtest.example")).collect();
    db.execute(
        "INSERT INTO users (id, username, email, password_hash, created_at, updated_at)
         SELECT id, username, email, $4, now(), now() FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, username, email)",
        &[&ids, &names, &emails, &hash],
    )
    .await
    .context("inserting users")?;
    database_settings(&db).await
}

/// The server version and the durability settings the write figures depend on.
async fn database_settings(db: &tokio_postgres::Client) -> anyhow::Result<String> {
    let row = db
        .query_one("SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')", &[])
        .await
        .context("reading PostgreSQL's settings")?;
    let (version, fsync, sync_commit): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    Ok(format!("PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync_commit})"))
}

/// Creates `n` OAuth clients through the admin API.
pub async fn clients(api: &Api, admin_token: &str, n: usize) -> anyhow::Result<Vec<OAuthClient>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(api.create_client(admin_token, &format!("loadtest-client-{i}")).await?);
    }
    Ok(out)
}
