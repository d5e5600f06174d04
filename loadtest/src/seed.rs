//! Seed data: 10,000 users and a set of OAuth clients.
//!
//! Users go straight into PostgreSQL: through the API each create costs an argon2 hash
//! on the server (about 60 a second on two cores, so nearly three minutes for 10k). They
//! share one argon2id hash made with the backend's default parameters, so every login
//! still costs the server exactly one full verification. Clients go through the admin
//! API, which is cheap and keeps their secrets real.

use anyhow::Context;
use argon2::password_hash::{PasswordHasher, SaltString};
use rand::rngs::OsRng;
use tokio_postgres::NoTls;

use crate::client::{Api, OAuthClient, PASSWORD};

pub fn username(i: usize) -> String {
    format!("loadtest-{i}")
}

/// The backend's defaults (`QUANTAID_ARGON2_*`): what a real login verifies against.
fn password_hash() -> anyhow::Result<String> {
    let params = argon2::Params::new(19_456, 2, 1, None)
        .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut OsRng);
    Ok(hasher
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

/// Inserts users `loadtest-0..n` (skipping names that exist, so a re-run is harmless).
pub async fn users(database_url: &str, n: usize) -> anyhow::Result<()> {
    let (db, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    let hash = password_hash()?;
    // UUIDv7 ids, as the backend makes them: the proxy's Bloom filter reads their time.
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    let names: Vec<String> = (0..n).map(username).collect();
    let emails: Vec<String> = names
        .iter()
        .map(|u| format!("{u}@loadtest.example"))
        .collect();
    db.execute(
        "INSERT INTO users (id, username, email, password_hash, created_at, updated_at)
         SELECT id, username, email, $4, now(), now() FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, username, email)
         ON CONFLICT DO NOTHING",
        &[&ids, &names, &emails, &hash],
    )
    .await
    .context("inserting users")?;
    Ok(())
}

/// Creates `n` OAuth clients through the admin API.
pub async fn clients(api: &Api, admin_token: &str, n: usize) -> anyhow::Result<Vec<OAuthClient>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(
            api.create_client(admin_token, &format!("loadtest-client-{i}"))
                .await?,
        );
    }
    Ok(out)
}
