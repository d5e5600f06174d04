//! The storage layer: PostgreSQL through a bounded `bb8` pool of `tokio-postgres`
//! clients with a per-connection prepared-statement cache, and instrumented,
//! time-bounded, named queries. Each query names the row type it returns, and each row
//! type decodes itself by column name ([`FromRow`]). Storage answers with its own
//! [`StorageError`], never an HTTP error; `error.rs` maps it to one, once.
//!
//! Invariant 7 (docs/design.md): waiting for a connection and running a statement are both bounded; past
//! either bound the caller gets `503 temporarily_unavailable`, never a hang.
//!
//! High availability: every new connection tries the configured servers in order and keeps
//! the first that accepts writes, and a pooled connection to a server that stopped accepting
//! them (a demoted or fenced primary) or stopped answering is dropped, so after a failover
//! the pool refills from the new primary by itself (docs/chaos.md, `db-primary-kill`).

// Public: the integration tests plan these queries and count the migrations.
pub mod audit;
pub mod migrations;
pub mod tokens;
pub mod users;

pub(crate) mod clients;
pub(crate) mod outbox;
pub(crate) mod revocation;
pub(crate) mod sessions;
pub(crate) mod snapshot;
pub(crate) mod throttle;
pub(crate) mod totp;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8::{ManageConnection, PooledConnection, RunError};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, SimpleQueryMessage, Statement};

use crate::config::DbConfig;
use crate::metrics::Metrics;

/// Why storage could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No connection could be had or kept, or the database did not answer in time: the
    /// caller may retry (invariant 7).
    #[error("{0}")]
    Unavailable(&'static str),
    /// A unique constraint refused the row; its name says which.
    #[error("unique constraint {0:?} violated")]
    Conflict(String),
    /// Text with a NUL character reached the database, which cannot store it.
    #[error("text must not contain NUL characters")]
    NulInText,
    /// Anything else: a fault of the query or of the database.
    #[error(transparent)]
    Other(anyhow::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A row type that reads its own columns, by name, from a result row.
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error>;
}

/// For statements whose rows, if any, are only counted or looked for.
impl FromRow for () {
    fn from_row(_: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(())
    }
}

/// `SELECT count(*) AS count ...`.
pub struct Count {
    pub count: i64,
}

impl FromRow for Count {
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Count { count: row.try_get("count")? })
    }
}

/// A named SQL statement and the row type it returns; the name is the `query` label on
/// the database metrics.
pub struct Query<R = ()> {
    pub name: &'static str,
    pub sql: &'static str,
    row: PhantomData<fn() -> R>,
}

impl<R> Query<R> {
    pub const fn new(name: &'static str, sql: &'static str) -> Self {
        Query { name, sql, row: PhantomData }
    }
}

/// A pooled client plus the statements already prepared on it, so a hot query costs
/// one round trip instead of a parse and an execute.
pub struct PgConn {
    pub client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
    /// Set when a call showed the connection unusable although it is still open (the
    /// server became read-only, or stopped answering); the pool then drops it.
    broken: AtomicBool,
}

/// Why a connection could not be had or kept.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the server no longer accepts writes (a demoted primary or a standby)")]
    ReadOnly,
    #[error("the server did not complete the connection within {0:?}")]
    Unresponsive(Duration),
}

/// Bound on reaching one server: TCP connect, start-up, authentication and the read-write
/// check together. A hung server accepts the TCP connection (its kernel does) and then never
/// answers; past this bound the next server is tried.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

/// Opens connections for the pool and attaches the statement cache to each.
pub struct Manager {
    /// One configuration per server of `QUANTAID_DB_HOST`, tried in order.
    servers: Vec<tokio_postgres::Config>,
}

impl ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnError;

    /// The first server, in order, that answers within [`CONNECT_BOUND`] and accepts writes.
    /// (tokio-postgres tries a multi-host configuration in order too, but bounds only each
    /// TCP connect, so one hung server would stall every new connection.)
    async fn connect(&self) -> Result<PgConn, Self::Error> {
        let mut last = None;
        for server in &self.servers {
            match tokio::time::timeout(CONNECT_BOUND, server.connect(NoTls)).await {
                Ok(Ok((client, connection))) => {
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "database connection ended");
                        }
                    });
                    return Ok(PgConn { client, statements: Mutex::new(HashMap::new()), broken: AtomicBool::new(false) });
                }
                Ok(Err(e)) => last = Some(ConnError::Postgres(e)),
                Err(_) => last = Some(ConnError::Unresponsive(CONNECT_BOUND)),
            }
        }
        Err(last.unwrap_or(ConnError::Unresponsive(Duration::ZERO)))
    }

    /// Run on every checkout. It asks what the connection check at connect time asks
    /// (`target_session_attrs=read-write`), so a connection to a primary that has since
    /// been demoted is dropped here instead of failing the caller's write.
    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), Self::Error> {
        // The pool abandons a check that outlasts the pool wait and would then keep the
        // connection; marked broken until the server answers, such a connection (to a hung
        // server) is dropped instead.
        conn.broken.store(true, Ordering::Relaxed);
        let answer = conn.client.simple_query("SHOW transaction_read_only").await?;
        let read_only = answer.iter().any(|m| matches!(m, SimpleQueryMessage::Row(row) if row.get("transaction_read_only") == Some("on")));
        if read_only {
            return Err(ConnError::ReadOnly);
        }
        conn.broken.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed() || conn.broken.load(Ordering::Relaxed)
    }
}

/// The connection settings shared by every server, without a host.
fn base_config(cfg: &DbConfig) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    // Always, even with one server: the backend writes, so a standby is never usable.
    pg.target_session_attrs(TargetSessionAttrs::ReadWrite)
        .user(&cfg.user)
        .dbname(&cfg.name)
        .application_name("quantaid-backend")
        .connect_timeout(CONNECT_BOUND)
        .options(format!("-c statement_timeout={}", cfg.statement_timeout.as_millis()));
    if !cfg.password.is_empty() {
        pg.password(&cfg.password);
    }
    pg
}

/// All servers in one configuration (tried in order, the first writable one kept), for
/// one-off connections such as migrations.
pub fn pg_config(cfg: &DbConfig) -> tokio_postgres::Config {
    let mut pg = base_config(cfg);
    for server in &cfg.servers {
        pg.host(&server.host).port(server.port);
    }
    pg
}

#[derive(Clone)]
pub struct Db {
    pool: bb8::Pool<Manager>,
    /// Client-side bound on one statement: the server's timeout plus a margin, for the
    /// case where the server or the network stops answering altogether.
    statement_bound: Duration,
    pool_max: u32,
    metrics: Arc<Metrics>,
}

impl Db {
    pub async fn connect(cfg: &DbConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let servers = cfg
            .servers
            .iter()
            .map(|server| {
                let mut pg = base_config(cfg);
                pg.host(&server.host).port(server.port);
                pg
            })
            .collect();
        let manager = Manager { servers };
        let pool = bb8::Pool::builder()
            .min_idle(Some(cfg.pool_min))
            .max_size(cfg.pool_max)
            .connection_timeout(cfg.pool_wait)
            .idle_timeout(Some(Duration::from_secs(600)))
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Db { pool, statement_bound: cfg.statement_timeout + Duration::from_secs(1), pool_max: cfg.pool_max, metrics })
    }

    /// Takes a connection, waiting at most the configured pool wait.
    pub async fn conn(&self) -> StorageResult<Conn<'_>> {
        match self.pool.get().await {
            Ok(conn) => Ok(Conn { conn, db: self }),
            Err(RunError::TimedOut) => {
                self.metrics.db_pool_wait_timeouts.inc();
                Err(StorageError::Unavailable("no database connection became free in time"))
            }
            Err(RunError::User(e)) => {
                tracing::warn!(error = %e, "database connection failed");
                Err(StorageError::Unavailable("the database is unreachable"))
            }
        }
    }

    pub fn update_pool_gauges(&self) {
        let state = self.pool.state();
        let g = &self.metrics.db_pool_connections;
        g.with_label_values(&["idle"]).set(i64::from(state.idle_connections));
        g.with_label_values(&["in_use"]).set(i64::from(state.connections - state.idle_connections));
        g.with_label_values(&["max"]).set(i64::from(self.pool_max));
    }

    /// Readiness: a connection can be had and answers.
    pub async fn ping(&self) -> StorageResult<()> {
        const PING: Query = Query::new("ping", "SELECT 1");
        let conn = self.conn().await?;
        conn.query_opt(&PING, &[]).await.map(|_| ())
    }
}

pub struct Conn<'a> {
    conn: PooledConnection<'a, Manager>,
    db: &'a Db,
}

impl Conn<'_> {
    /// The raw client, for transactions (the caller bounds its own statements via the
    /// server-side `statement_timeout`).
    fn client_mut(&mut self) -> &mut Client {
        &mut self.conn.client
    }

    async fn statement<R>(&self, q: &Query<R>) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.conn.statements.lock().unwrap_or_else(|p| p.into_inner()).get(q.name) {
            return Ok(s.clone());
        }
        let stmt = self.conn.client.prepare(q.sql).await?;
        self.conn.statements.lock().unwrap_or_else(|p| p.into_inner()).insert(q.name, stmt.clone());
        Ok(stmt)
    }

    /// Runs one database call with metrics and the client-side time bound.
    async fn run<T>(
        &self,
        name: &'static str,
        work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> StorageResult<T> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.db.statement_bound, work).await;
        let m = &self.db.metrics;
        m.db_query_duration.with_label_values(&[name]).observe(started.elapsed().as_secs_f64());
        let result = match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // A write refused as read-only: this server is no longer the primary.
                if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
                    self.conn.broken.store(true, Ordering::Relaxed);
                }
                Err(map_pg_error(name, e))
            }
            Err(_) => {
                // Past the server's own timeout the server (or the path to it) is gone;
                // the connection's state is unknown, so it is not reused.
                self.conn.broken.store(true, Ordering::Relaxed);
                Err(StorageError::Unavailable("the database did not answer in time"))
            }
        };
        m.db_queries.with_label_values(&[name, if result.is_ok() { "ok" } else { "error" }]).inc();
        result
    }

    pub async fn query<R: FromRow>(&self, q: &Query<R>, params: &[&(dyn ToSql + Sync)]) -> StorageResult<Vec<R>> {
        let rows = self.run(q.name, async { self.conn.client.query(&self.statement(q).await?, params).await }).await?;
        rows.iter().map(|row| decode(q.name, row)).collect()
    }

    pub async fn query_opt<R: FromRow>(&self, q: &Query<R>, params: &[&(dyn ToSql + Sync)]) -> StorageResult<Option<R>> {
        let row = self.run(q.name, async { self.conn.client.query_opt(&self.statement(q).await?, params).await }).await?;
        row.as_ref().map(|row| decode(q.name, row)).transpose()
    }

    pub async fn query_one<R: FromRow>(&self, q: &Query<R>, params: &[&(dyn ToSql + Sync)]) -> StorageResult<R> {
        let row = self.run(q.name, async { self.conn.client.query_one(&self.statement(q).await?, params).await }).await?;
        decode(q.name, &row)
    }

    /// Runs a statement for its effect; returns how many rows it touched.
    pub async fn execute<R>(&self, q: &Query<R>, params: &[&(dyn ToSql + Sync)]) -> StorageResult<u64> {
        self.run(q.name, async { self.conn.client.execute(&self.statement(q).await?, params).await }).await
    }

    /// For SQL assembled per request (the audit filters): planned with its real shape
    /// every time, so it is not cached.
    pub async fn query_unprepared<R: FromRow>(
        &self,
        name: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StorageResult<Vec<R>> {
        let rows = self.run(name, self.conn.client.query(sql, params)).await?;
        rows.iter().map(|row| decode(name, row)).collect()
    }
}

/// A row the query's own row type cannot read is a fault of the code, not of the database.
fn decode<R: FromRow>(query: &str, row: &Row) -> StorageResult<R> {
    R::from_row(row).map_err(|e| StorageError::Other(anyhow::Error::new(e).context(format!("decoding a row of query {query}"))))
}

fn map_pg_error(query: &str, e: tokio_postgres::Error) -> StorageError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
            StorageError::Conflict(e.as_db_error().and_then(|d| d.constraint()).unwrap_or_default().to_string())
        }
        // A NUL in text: the extractors refuse it before any query (`http/extract.rs`);
        // should one slip through, it is still the client's bad input, not a 500.
        Some(c) if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE => {
            tracing::warn!(query, "text with a NUL character reached the database");
            StorageError::NulInText
        }
        Some(c) if *c == SqlState::QUERY_CANCELED => {
            tracing::warn!(query, "statement timed out");
            StorageError::Unavailable("the database did not answer in time")
        }
        Some(c)
            if *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::READ_ONLY_SQL_TRANSACTION
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            StorageError::Unavailable("the database is unavailable")
        }
        None if e.is_closed() || e.as_db_error().is_none() => {
            tracing::warn!(query, error = %e, "database connection error");
            StorageError::Unavailable("the database is unavailable")
        }
        _ => StorageError::Other(anyhow::Error::new(e).context(format!("query {query}"))),
    }
}
