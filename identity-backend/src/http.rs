//! The HTTP layer: the route table and the router built from it, the listeners, and
//! (in `http/`) one module of handlers per resource, the extractors and the middleware.
//! Handlers call the domain rules (`domain/`) and storage (`storage/`), and every
//! failure leaves as an `ApiError` (`error.rs`).

mod audit;
mod extract;
mod internal;
mod mfa;
mod middleware;
mod oauth;
mod ops;
mod sessions;
mod users;

use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{self, get, MethodRouter};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use quantaid_protocol::routes as paths;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::http::oauth::{clients, introspect, metadata, revoke, token};
use crate::SharedState;

/// One route of the API: the method and path template it is served under, and its
/// handler. The constructors pair the method with axum's routing function, so the two
/// cannot disagree.
struct ApiRoute {
    method: Method,
    path: &'static str,
    handler: MethodRouter<SharedState>,
}

impl ApiRoute {
    fn get<H: Handler<T, SharedState>, T: 'static>(path: &'static str, handler: H) -> Self {
        ApiRoute { method: Method::GET, path, handler: routing::get(handler) }
    }
    fn post<H: Handler<T, SharedState>, T: 'static>(path: &'static str, handler: H) -> Self {
        ApiRoute { method: Method::POST, path, handler: routing::post(handler) }
    }
    fn patch<H: Handler<T, SharedState>, T: 'static>(path: &'static str, handler: H) -> Self {
        ApiRoute { method: Method::PATCH, path, handler: routing::patch(handler) }
    }
    fn delete<H: Handler<T, SharedState>, T: 'static>(path: &'static str, handler: H) -> Self {
        ApiRoute { method: Method::DELETE, path, handler: routing::delete(handler) }
    }
}

/// The route table: `api_router` is built from it and `routes` lists it, so the list
/// that tests compare with docs/openapi.json is the router itself. Its paths are the
/// templates `quantaid_protocol::routes` names for both sidecars.
fn api_routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::get(paths::HEALTH, ops::health),
        ApiRoute::get(paths::READY, ops::ready),
        ApiRoute::post(paths::USERS, users::create),
        ApiRoute::get(paths::USERS, users::list),
        ApiRoute::get(paths::USER, users::get),
        ApiRoute::patch(paths::USER, users::update),
        ApiRoute::delete(paths::USER, users::delete),
        ApiRoute::post(paths::USER_PASSWORD, users::change_password),
        ApiRoute::post(paths::USER_TOTP, mfa::enroll),
        ApiRoute::delete(paths::USER_TOTP, mfa::remove),
        ApiRoute::post(paths::USER_TOTP_CONFIRM, mfa::confirm),
        ApiRoute::post(paths::LOGIN, sessions::login),
        ApiRoute::post(paths::MFA_VERIFY, sessions::mfa_verify),
        ApiRoute::get(paths::SESSION, sessions::current),
        ApiRoute::post(paths::LOGOUT, sessions::logout),
        ApiRoute::post(paths::LOGOUT_ALL, sessions::logout_all),
        ApiRoute::post(paths::REAUTHENTICATE, sessions::reauthenticate),
        ApiRoute::post(paths::CLIENTS, clients::create),
        ApiRoute::patch(paths::CLIENT, clients::update),
        ApiRoute::delete(paths::CLIENT, clients::delete),
        ApiRoute::post(paths::CLIENT_SECRET, clients::rotate_secret),
        ApiRoute::post(paths::TOKEN, token::token),
        ApiRoute::post(paths::INTROSPECT, introspect::introspect),
        ApiRoute::post(paths::REVOKE, revoke::revoke),
        ApiRoute::get(paths::METADATA, metadata::metadata),
        ApiRoute::get(paths::USERINFO, metadata::userinfo),
        ApiRoute::get(paths::AUDIT_LOGS, audit::list),
        ApiRoute::get(paths::INTERNAL_BLOOM_SNAPSHOT, internal::bloom_snapshot),
        ApiRoute::post(paths::INTERNAL_INTROSPECT, internal::introspect),
    ]
}

/// The method and path template of every route `api_router` serves (`GET` also answers
/// `HEAD`, as in axum). docs/openapi.json lists the same, except `/internal/*`.
/// A response that holds a credential or what it grants: never stored by a cache on the
/// way (RFC 6749 §5.1, RFC 7662 §4).
pub fn no_store(body: impl axum::response::IntoResponse) -> axum::response::Response {
    let mut response = body.into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    response
}

pub fn routes() -> Vec<(Method, &'static str)> {
    api_routes().into_iter().map(|r| (r.method, r.path)).collect()
}

pub fn api_router(state: SharedState) -> Router {
    // Routes on one path merge into one method router (axum does that for `route`).
    api_routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .fallback(|| async { ApiError::NotFound("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed("method not allowed on this endpoint".into()) })
        // Inside `observe`, so that metrics and logs see the status the client gets.
        .layer(axum::middleware::from_fn(middleware::acknowledge_only_published))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::observe))
        .layer(axum::middleware::from_fn(middleware::run_to_completion))
        .with_state(state)
}

pub fn metrics_router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { ApiError::NotFound("only /metrics is served here") })
        .with_state(state)
}

/// How many connections the kernel may hold for the backend before it accepts them
/// (the kernel caps it at `net.core.somaxconn`, 4096 by default). The usual 128 is
/// less than one burst from a proxy under load: connections beyond it have their SYN
/// dropped and wait a full second for the retransmission, past the proxy's connect
/// timeout, and the client gets a 503 from a healthy backend.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with room for a burst of connections.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // A restarted backend can bind while the old one's connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains: each open
/// connection finishes its in-flight request and closes.
///
/// Every connection must deliver a complete request head within `header_timeout` of
/// opening or of its previous response (hyper's header-read timer, which also runs
/// while a keep-alive connection waits for its next request, so it is the idle timeout
/// too). A client that sends nothing, or a header a byte at a time, is disconnected
/// instead of holding a socket and a task forever. Bodies are bounded by the request
/// deadline in `middleware.rs`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    header_timeout: Duration,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
