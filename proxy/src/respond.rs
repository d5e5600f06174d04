//! Writing the proxy's own answers: JSON bodies, error bodies in the shared shape
//! (`quantaid_protocol::wire::ErrorBody`), and the headers each status needs.

use bytes::Bytes;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use quantaid_protocol::wire::ErrorBody;

use crate::service::RequestCtx;

/// One response: a JSON body (or none) with the given status and extra headers.
pub(crate) async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: Option<Bytes>,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 3))?;
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        resp.insert_header("content-type", "application/json")?;
    }
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in headers {
        resp.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp), body.is_empty()).await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    ctx.status = status.as_u16();
    Ok(true)
}

pub(crate) fn error_body(code: &str, description: &str) -> Option<Bytes> {
    Some(Bytes::from(ErrorBody { error: code, error_description: description }.to_json()))
}

pub(crate) async fn respond_error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: StatusCode,
    code: &str,
    description: &str,
) -> Result<bool> {
    let headers: Vec<(&'static str, String)> = match status {
        StatusCode::UNAUTHORIZED => vec![("www-authenticate", "Bearer realm=\"quantaid\"".into())],
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => vec![("retry-after", "1".into())],
        _ => vec![],
    };
    respond(session, ctx, status, &headers, error_body(code, description)).await
}

pub(crate) async fn unavailable(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    respond_error(
        session,
        ctx,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the identity backend is not answering; retry shortly",
    )
    .await
}

pub(crate) async fn body_too_slow(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    session.set_keepalive(None);
    respond_error(session, ctx, StatusCode::REQUEST_TIMEOUT, "invalid_request", "the request body was not received in time").await
}
