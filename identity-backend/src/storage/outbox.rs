//! The `cache_invalidations` outbox: markers Redis did not take yet.

use tokio_postgres::Row;

use super::{Count, FromRow, Query};

pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub key: String,
    pub value: i64,
}

impl FromRow for OutboxRow {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(OutboxRow { id: row.try_get("id")?, kind: row.try_get("kind")?, key: row.try_get("key")?, value: row.try_get("value")? })
    }
}

pub const OUTBOX_INSERT: Query = Query::new(
    "invalidation_outbox_insert",
    "INSERT INTO cache_invalidations (kind, key, value) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
);
pub const OUTBOX_PENDING: Query<OutboxRow> =
    Query::new("invalidation_outbox_pending", "SELECT id, kind, key, value FROM cache_invalidations ORDER BY id LIMIT 500");
pub const OUTBOX_DELETE: Query = Query::new("invalidation_outbox_delete", "DELETE FROM cache_invalidations WHERE id = ANY($1)");
pub const COUNT_OUTBOX: Query<Count> = Query::new("invalidation_outbox_count", "SELECT count(*) AS count FROM cache_invalidations");
