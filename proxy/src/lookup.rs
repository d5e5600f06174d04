//! Cached lookups: Bloom filter, then Redis, then one backend call per key, then a
//! fill that a concurrent revocation can veto (docs/design.md, invariants 1–6).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use http::{HeaderValue, StatusCode};
use quantaid_protocol::access::Principal;
use quantaid_protocol::cache::{self, entry};
use quantaid_protocol::introspection::Introspector;
use quantaid_protocol::token::{self, TokenKind};
use quantaid_protocol::wire::{Introspection, SessionView};
use uuid::Uuid;

use crate::backend::{BackendClient, Reply, Unavailable};
use crate::cache::bloom::BloomGuard;
use crate::cache::jittered_ttl;
use crate::cache::redis::{Cached, RedisCache};
use crate::config::Config;
use crate::metrics::METRICS;
use crate::singleflight::SingleFlight;

/// Cached body of a negative entry ("does not exist / not valid").
const NEGATIVE: &str = "!";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The backend's JSON body for the key.
    Found(Arc<str>),
    /// No such (valid) session, token or user.
    NotFound,
    /// The backend refused the caller (a credential revoked a moment ago): passed on.
    Refused(StatusCode, Arc<str>),
    /// The remembered client credentials authorizing this read cannot be relied on (the
    /// client changed since they were verified, or Redis cannot say): the backend must
    /// verify them again.
    CallerStale,
}

pub type LookupResult = Result<Answer, Unavailable>;

/// What a backend call produced: the answer and, if cacheable, how to cache it.
struct Fetched {
    answer: Answer,
    fill: Option<Fill>,
}

struct Fill {
    body: Arc<str>,
    ttl: Duration,
    user_id: Option<String>,
    created_ms: Option<i64>,
    user_version: Option<String>,
    /// The OAuth client a token belongs to (its `client_revoked_before` marker applies).
    client_id: Option<String>,
}

#[derive(Clone, Copy)]
enum Kind {
    Session,
    Token,
    User,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Token => "token",
            Kind::User => "user",
        }
    }
}

/// Who is calling, resolved from the cache like any other lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    BootstrapAdmin,
    Session { user_id: Uuid },
    Token { scopes: String },
}

impl Caller {
    /// The caller as the shared authorization rules (`quantaid_protocol::access`) see it.
    pub fn principal(&self) -> Principal<'_> {
        match self {
            Caller::BootstrapAdmin => Principal::BootstrapAdmin,
            Caller::Session { user_id } => Principal::Session { user_id: *user_id },
            Caller::Token { scopes } => Principal::Token { scopes },
        }
    }
}

/// Client credentials the backend accepted, remembered by this replica.
#[derive(Debug)]
pub struct VerifiedClient {
    /// Who the client is and which tokens it may introspect.
    pub introspector: Introspector,
    /// The client's `client_revoked_before` marker when the backend accepted the
    /// credentials ("0": none); any change makes them unverified again.
    pub marker: String,
    verified_at: Instant,
    /// A re-verification with the backend is under way (one at a time per credentials).
    refreshing: AtomicBool,
}

impl VerifiedClient {
    /// Whether this caller starts the re-verification of credentials past
    /// `QUANTAID_CACHE_CLIENT_TTL_SECS` (nobody else is doing it).
    pub fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// A re-verification that could not reach the backend: the next caller tries again.
    pub fn refresh_failed(&self) {
        self.refreshing.store(false, Ordering::Release);
    }
}

/// How recently remembered client credentials were verified by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Within `QUANTAID_CACHE_CLIENT_TTL_SECS`.
    Recently,
    /// Longer ago, but within `QUANTAID_CACHE_MAX_TTL_SECS`: still usable, because every
    /// cached read checks the client's marker (a disable, rotation or deletion is seen at
    /// once), while the backend is asked again in the background. A slow or unreachable
    /// database then does not turn cached introspections into errors.
    Stale,
}

pub struct Lookups {
    pub redis: RedisCache,
    pub bloom: BloomGuard,
    pub backend: BackendClient,
    flights: SingleFlight<LookupResult>,
    /// Client credentials (digest of `id:secret`) the backend accepted recently, so a
    /// cached introspection needs no backend call to authenticate its caller.
    verified_clients: Mutex<HashMap<String, Arc<VerifiedClient>>>,
    admin_token_digest: Option<String>,
    config: Arc<Config>,
}

/// A live cache entry's answer: the stored body, or "not found" for a negative entry.
fn cached_answer(body: Arc<str>) -> Answer {
    if &*body == NEGATIVE {
        Answer::NotFound
    } else {
        Answer::Found(body)
    }
}

/// A found answer's body as the type the backend wrote it as: `Ok(None)` when nothing was
/// found; `Unavailable` when a found body does not parse, since nothing can be said then.
pub fn found<T: serde::de::DeserializeOwned>(answer: Answer) -> std::result::Result<Option<T>, Unavailable> {
    match answer {
        Answer::Found(body) => serde_json::from_str(&body).map(Some).map_err(|_| Unavailable),
        _ => Ok(None),
    }
}

fn until(unix_secs: i64) -> Option<Duration> {
    let ms = unix_secs.saturating_mul(1000) - Utc::now().timestamp_millis();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

impl Lookups {
    pub fn new(config: Arc<Config>, redis: RedisCache, backend: BackendClient) -> Self {
        Lookups {
            redis,
            bloom: BloomGuard::default(),
            backend,
            flights: SingleFlight::default(),
            verified_clients: Mutex::new(HashMap::new()),
            admin_token_digest: config.bootstrap_admin_token.as_deref().map(cache::hex_digest),
            config,
        }
    }

    /// The shared path: Bloom → Redis → single-flight backend call → guarded fill.
    /// `caller` is the remembered client whose credentials authorize the read, checked
    /// in the same Redis round trip.
    async fn cached<F>(
        &self,
        kind: Kind,
        key: &str,
        created_ms: i64,
        flight_key: &str,
        caller: Option<&VerifiedClient>,
        fetch: impl FnOnce(Option<String>) -> F,
    ) -> LookupResult
    where
        F: Future<Output = Result<Fetched, Unavailable>>,
    {
        let absent = self.bloom.definitely_absent(key, created_ms);
        if absent && caller.is_none() {
            METRICS.bloom_rejections.with_label_values(&["absent"]).inc();
            return Ok(Answer::NotFound);
        }
        let user_id = matches!(kind, Kind::User).then(|| key.trim_start_matches("user:"));
        let caller_check = caller.map(|c| (c.introspector.client_id.as_str(), c.marker.as_str()));
        let read_at = self.flights.now();
        let cached = self.redis.lookup(key, user_id, caller_check).await;
        if caller.is_some() && matches!(cached, Cached::CallerStale | Cached::Unavailable) {
            return Ok(Answer::CallerStale);
        }
        if absent {
            METRICS.bloom_rejections.with_label_values(&["absent"]).inc();
            return Ok(Answer::NotFound);
        }
        let (user_version, may_fill) = match cached {
            Cached::Hit(body) => {
                METRICS.cache_hits.with_label_values(&[kind.label()]).inc();
                return Ok(cached_answer(body));
            }
            Cached::Revoked => {
                METRICS.cache_hits.with_label_values(&[kind.label()]).inc();
                return Ok(Answer::NotFound);
            }
            Cached::Miss { user_version } => {
                METRICS.cache_misses.with_label_values(&[kind.label()]).inc();
                (user_version, true)
            }
            Cached::Unavailable | Cached::CallerStale => {
                METRICS.cache_misses.with_label_values(&[kind.label()]).inc();
                if self.config.redis_enabled() {
                    METRICS.cache_fallback.inc();
                }
                (None, false)
            }
        };
        self.flights
            .run(flight_key, read_at, |recheck| async move {
                let mut user_version = user_version;
                if recheck && may_fill {
                    // Another flight for this key finished after our miss was read, and
                    // has most likely filled the entry: read it before calling the backend.
                    match self.redis.lookup(key, user_id, caller_check).await {
                        Cached::Hit(body) => return Ok(cached_answer(body)),
                        Cached::Revoked => return Ok(Answer::NotFound),
                        Cached::Miss { user_version: now } => user_version = now,
                        Cached::Unavailable | Cached::CallerStale => {}
                    }
                }
                let fetched = fetch(user_version).await?;
                if let (true, Some(fill)) = (may_fill, fetched.fill) {
                    self.fill(key, &fill).await;
                }
                Ok(fetched.answer)
            })
            .await
    }

    async fn fill(&self, key: &str, fill: &Fill) {
        let (user_id, user_version, client_id) = (fill.user_id.as_deref(), fill.user_version.as_deref(), fill.client_id.as_deref());
        let entry = entry(fill.created_ms, user_id, user_version, client_id, &fill.body);
        self.redis.fill(key, &entry, fill.ttl, user_id, fill.created_ms, user_version, client_id).await;
    }

    fn negative(&self, user_id: Option<String>, created_ms: Option<i64>, user_version: Option<String>) -> Option<Fill> {
        let ttl = jittered_ttl(self.config.negative_ttl, None);
        Some(Fill { body: NEGATIVE.into(), ttl, user_id, created_ms, user_version, client_id: None })
    }

    /// A session token's session (`GET /v1/auth/session` body), cached under
    /// `session:{sha256}` for 30 min ±10%, never past the session's expiry.
    pub async fn session(&self, session_token: &str, trace: Option<&HeaderValue>) -> LookupResult {
        let Some(info) = token::parse_kind(session_token, TokenKind::Session) else {
            METRICS.bloom_rejections.with_label_values(&["malformed"]).inc();
            return Ok(Answer::NotFound);
        };
        let created_ms = info.issued_at.timestamp_millis();
        let key = cache::session_key(session_token);
        self.cached(Kind::Session, &key, created_ms, &key, None, |_| async move {
            let reply = self.backend.session(session_token, trace).await?;
            match reply.status {
                StatusCode::OK => {
                    let view: SessionView = serde_json::from_slice(&reply.body).map_err(|_| Unavailable)?;
                    let text: Arc<str> = String::from_utf8_lossy(&reply.body).into();
                    let ttl = jittered_ttl(self.config.session_ttl, Some(until(view.expires_at.timestamp()).unwrap_or_default()));
                    let user_id = Some(view.user_id.to_string());
                    let fill = Fill { body: text.clone(), ttl, user_id, created_ms: Some(created_ms), user_version: None, client_id: None };
                    Ok(Fetched { answer: Answer::Found(text), fill: Some(fill) })
                }
                StatusCode::UNAUTHORIZED => Ok(Fetched { answer: Answer::NotFound, fill: self.negative(None, None, None) }),
                _ => Err(Unavailable),
            }
        })
        .await
    }

    /// A token's RFC 7662 introspection body, cached under `token:{sha256}` for its
    /// remaining lifetime (less up to 10% jitter, and within the cache's maximum TTL).
    pub async fn token(&self, presented: &str, trace: Option<&HeaderValue>) -> LookupResult {
        self.token_as(presented, None, trace).await
    }

    /// [`Self::token`] on behalf of a remembered client: `Answer::CallerStale` when its
    /// credentials must be verified again first. The answer is the full one; what the
    /// client may see of it is `Introspector::visible`.
    pub async fn token_as(&self, presented: &str, caller: Option<&VerifiedClient>, trace: Option<&HeaderValue>) -> LookupResult {
        let info = token::parse(presented).filter(|t| matches!(t.kind, TokenKind::Access | TokenKind::Refresh));
        let Some(info) = info else {
            METRICS.bloom_rejections.with_label_values(&["malformed"]).inc();
            return Ok(Answer::NotFound);
        };
        let created_ms = info.issued_at.timestamp_millis();
        let key = cache::token_key(presented);
        self.cached(Kind::Token, &key, created_ms, &key, caller, |_| async move {
            let reply = self.backend.introspect_internal(presented, trace).await?;
            self.token_fetched(reply, created_ms)
        })
        .await
    }

    fn token_fetched(&self, reply: Reply, created_ms: i64) -> Result<Fetched, Unavailable> {
        if reply.status != StatusCode::OK {
            return Err(Unavailable);
        }
        let answer: Introspection = serde_json::from_slice(&reply.body).map_err(|_| Unavailable)?;
        if !answer.active {
            return Ok(Fetched { answer: Answer::NotFound, fill: self.negative(None, None, None) });
        }
        // A user's token is revoked with its user (logout-all and friends).
        let user_id = answer.user_id().map(str::to_string);
        let remaining = answer.exp.and_then(until).unwrap_or_default();
        let ttl = jittered_ttl(remaining, Some(remaining.min(self.config.cache_max_ttl)));
        let client_id = answer.client_id;
        let text: Arc<str> = String::from_utf8_lossy(&reply.body).into();
        let fill = Fill { body: text.clone(), ttl, user_id, created_ms: Some(created_ms), user_version: None, client_id };
        Ok(Fetched { answer: Answer::Found(text), fill: Some(fill) })
    }

    /// A user record (`GET /v1/users/{id}` body), cached under `user:{id}` for 5 min
    /// ±10%. The caller has already been authorized; its credential rides along so the
    /// backend re-checks it. Callers do not share backend calls with each other.
    pub async fn user(&self, id: Uuid, authorization: &HeaderValue, trace: Option<&HeaderValue>) -> LookupResult {
        let Some(created_ms) = uuid_v7_ms(&id) else {
            METRICS.bloom_rejections.with_label_values(&["malformed"]).inc();
            return Ok(Answer::NotFound);
        };
        let key = cache::user_key(&id);
        let flight_key = format!("{key}#{}", cache::hex_digest(authorization.to_str().unwrap_or_default()));
        let user_id = id.to_string();
        self.cached(Kind::User, &key, created_ms, &flight_key, None, |user_version| async move {
            let reply = self.backend.user(&id, authorization, trace).await?;
            let version = Some(user_version.unwrap_or_else(|| "0".into()));
            match reply.status {
                StatusCode::OK => {
                    let text: Arc<str> = String::from_utf8_lossy(&reply.body).into();
                    let ttl = jittered_ttl(self.config.user_ttl, None);
                    let fill =
                        Fill { body: text.clone(), ttl, user_id: Some(user_id), created_ms: None, user_version: version, client_id: None };
                    Ok(Fetched { answer: Answer::Found(text), fill: Some(fill) })
                }
                StatusCode::NOT_FOUND => Ok(Fetched { answer: Answer::NotFound, fill: self.negative(Some(user_id), None, version) }),
                status if status.is_client_error() => {
                    let text: Arc<str> = String::from_utf8_lossy(&reply.body).into();
                    Ok(Fetched { answer: Answer::Refused(status, text), fill: None })
                }
                _ => Err(Unavailable),
            }
        })
        .await
    }

    /// Resolves a bearer credential to a caller, from the cache where possible.
    /// `Ok(None)`: not a valid credential.
    pub async fn caller(&self, bearer: &str, trace: Option<&HeaderValue>) -> Result<Option<Caller>, Unavailable> {
        if let Some(admin) = &self.admin_token_digest {
            let presented = cache::hex_digest(bearer);
            if subtle::ConstantTimeEq::ct_eq(admin.as_bytes(), presented.as_bytes()).into() {
                return Ok(Some(Caller::BootstrapAdmin));
            }
        }
        match token::parse(bearer).map(|t| t.kind) {
            Some(TokenKind::Session) => {
                Ok(found::<SessionView>(self.session(bearer, trace).await?)?.map(|view| Caller::Session { user_id: view.user_id }))
            }
            Some(TokenKind::Access) => {
                Ok(found::<Introspection>(self.token(bearer, trace).await?)?.map(|t| Caller::Token { scopes: t.scope.unwrap_or_default() }))
            }
            _ => Ok(None),
        }
    }

    /// Client credentials (digest of what was presented) the backend accepted, and how
    /// recently; `None` once they are older than any cache entry may be.
    pub fn verified_client(&self, credential_digest: &str) -> Option<(Arc<VerifiedClient>, Verified)> {
        let clients = self.verified_clients.lock().unwrap_or_else(|p| p.into_inner());
        let client = clients.get(credential_digest)?;
        let age = client.verified_at.elapsed();
        match age {
            _ if age < self.config.client_ttl => Some((client.clone(), Verified::Recently)),
            _ if age < self.config.cache_max_ttl => Some((client.clone(), Verified::Stale)),
            _ => None,
        }
    }

    /// The client's lifecycle marker as Redis holds it now ("0": none); `None` when
    /// Redis cannot say, and then nothing may be remembered.
    pub async fn client_marker(&self, client_id: &str) -> Option<String> {
        let marker = self.redis.get(&cache::client_revoked_before_key(client_id)).await?;
        Some(marker.unwrap_or_else(|| "0".into()))
    }

    /// Remembers credentials the backend accepted, with the client marker read before
    /// it checked them.
    pub fn remember_client(&self, credential_digest: String, introspector: Introspector, marker: String) {
        let mut clients = self.verified_clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() > 10_000 {
            let max_age = self.config.cache_max_ttl;
            clients.retain(|_, c| c.verified_at.elapsed() < max_age);
        }
        let client = VerifiedClient { introspector, marker, verified_at: Instant::now(), refreshing: AtomicBool::new(false) };
        clients.insert(credential_digest, Arc::new(client));
    }

    pub fn forget_client(&self, credential_digest: &str) {
        self.verified_clients.lock().unwrap_or_else(|p| p.into_inner()).remove(credential_digest);
    }

    /// Fills the token cache from an introspection the caller's own request obtained.
    pub async fn fill_token_from(&self, presented: &str, reply: Reply) {
        let Some(info) = token::parse(presented) else { return };
        let created_ms = info.issued_at.timestamp_millis();
        if let Ok(Fetched { fill: Some(fill), .. }) = self.token_fetched(reply, created_ms) {
            self.fill(&cache::token_key(presented), &fill).await;
        }
    }
}

/// The creation time (Unix ms) of a UUIDv7; `None` for any other UUID.
pub fn uuid_v7_ms(id: &Uuid) -> Option<i64> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    i64::try_from(secs).ok().map(|s| s * 1000 + i64::from(nanos / 1_000_000))
}
