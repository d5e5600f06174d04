//! The `oauth_clients` table.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{FromRow, Query};

/// What authenticating an enabled client needs.
pub struct ClientAuthRow {
    pub client_id: String,
    pub secret_digest: Vec<u8>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
}

impl FromRow for ClientAuthRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ClientAuthRow {
            client_id: row.try_get("client_id")?,
            secret_digest: row.try_get("secret_digest")?,
            grant_types: row.try_get("grant_types")?,
            scopes: row.try_get("scopes")?,
        })
    }
}

pub const CLIENT_BY_ID: Query<ClientAuthRow> = Query::new(
    "client_by_id",
    "SELECT client_id, secret_digest, grant_types, scopes FROM oauth_clients WHERE client_id = $1 AND NOT disabled",
);

/// A client as the API shows it (never its secret).
pub struct ClientRow {
    pub client_id: String,
    pub name: String,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
}

impl FromRow for ClientRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ClientRow {
            client_id: row.try_get("client_id")?,
            name: row.try_get("name")?,
            grant_types: row.try_get("grant_types")?,
            scopes: row.try_get("scopes")?,
            redirect_uris: row.try_get("redirect_uris")?,
            created_at: row.try_get("created_at")?,
            disabled: row.try_get("disabled")?,
        })
    }
}

pub const INSERT_CLIENT: Query = Query::new(
    "client_insert",
    "INSERT INTO oauth_clients (client_id, secret_digest, name, grant_types, scopes, redirect_uris, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)",
);
pub const SET_DISABLED: Query<ClientRow> = Query::new(
    "client_set_disabled",
    "UPDATE oauth_clients SET disabled = $2 WHERE client_id = $1
     RETURNING client_id, name, grant_types, scopes, redirect_uris, created_at, disabled",
);
pub const SET_SECRET: Query =
    Query::new("client_set_secret", "UPDATE oauth_clients SET secret_digest = $2 WHERE client_id = $1 RETURNING client_id");
