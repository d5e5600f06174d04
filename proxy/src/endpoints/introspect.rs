//! `POST /oauth/introspect`: the client's credentials and the token, both from the
//! cache when possible; credentials this replica does not know are checked by the backend.

use bytes::Bytes;
use http::StatusCode;
use pingora::prelude::*;
use pingora::proxy::Session;
use quantaid_protocol::cache::hex_digest;
use quantaid_protocol::introspection::{Introspector, INTROSPECTOR_HEADER};
use quantaid_protocol::oauth_form::{content_type_is, presented_client, Form, FORM_CONTENT_TYPE};
use quantaid_protocol::wire::{Introspection, IntrospectionOwner};

use crate::backend::Unavailable;
use crate::lookup::{Answer, Lookups, Verified, VerifiedClient};
use crate::respond::{body_too_slow, error_body, respond, respond_error, unavailable};
use crate::service::{within_body_deadline, QuantaProxy, RequestCtx};

impl QuantaProxy {
    /// `POST /oauth/introspect`: the client credentials and the token, both from the
    /// cache when possible.
    pub(crate) async fn introspect(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if !content_type_is(&session.req_header().headers, FORM_CONTENT_TYPE) {
            let description = format!("Content-Type must be {FORM_CONTENT_TYPE}");
            return respond_error(session, ctx, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request", &description).await;
        }
        let mut body = Vec::new();
        loop {
            let chunk = match session.read_request_body().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => return body_too_slow(session, ctx).await,
                Err(e) => return Err(e),
            };
            body.extend_from_slice(&chunk);
            if body.len() > self.config.max_body_bytes {
                return respond_error(session, ctx, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "request body is too large").await;
            }
            if !within_body_deadline(session, ctx) {
                return body_too_slow(session, ctx).await;
            }
        }
        let Ok(text) = std::str::from_utf8(&body) else {
            return respond_error(session, ctx, StatusCode::BAD_REQUEST, "invalid_request", "request body is not valid UTF-8").await;
        };
        let form = match Form::parse(text) {
            Ok(form) => form,
            Err(e) => return respond_error(session, ctx, StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()).await,
        };
        let challenge = [("www-authenticate", "Basic realm=\"quantaid\"".to_string())];
        let client = match presented_client(&session.req_header().headers, &form) {
            Ok(client) => client,
            Err(e) if e.is_invalid_client() => {
                return respond(session, ctx, StatusCode::UNAUTHORIZED, &challenge, error_body("invalid_client", e.description())).await
            }
            Err(e) => return respond_error(session, ctx, StatusCode::BAD_REQUEST, "invalid_request", e.description()).await,
        };
        let Some(presented) = form.get("token").map(str::to_string) else {
            return respond_error(session, ctx, StatusCode::BAD_REQUEST, "invalid_request", "missing parameter token").await;
        };
        // The credentials as presented name them in this replica's memory (by digest);
        // the client id they claim names its lifecycle marker.
        let client_id = client.client_id.clone();
        let client_key = hex_digest(&format!("{}:{}", client.client_id, client.secret));
        let body = Bytes::from(body);
        if let Some((verified, how_recently)) = self.lookups.verified_client(&client_key) {
            if how_recently == Verified::Stale && verified.start_refresh() {
                let (lookups, verified, key) = (self.lookups.clone(), verified.clone(), client_key.clone());
                let (headers, body, client_id) = (caller_headers(session), body.clone(), client_id.clone());
                tokio::spawn(async move { reverify(&lookups, &verified, key, &client_id, headers, body).await });
            }
            let inactive = || Some(Bytes::from_static(b"{\"active\":false}"));
            match self.lookups.token_as(&presented, Some(&verified), Some(&ctx.traceparent)).await {
                Ok(Answer::Found(body)) => {
                    // The same rule as the backend's (quantaid_protocol::introspection).
                    let Ok(owner) = serde_json::from_str::<IntrospectionOwner>(&body) else { return unavailable(session, ctx).await };
                    let shown = if verified.introspector.may_see_token(&owner) { Some(Bytes::from(body.to_string())) } else { inactive() };
                    return respond(session, ctx, StatusCode::OK, &[], shown).await;
                }
                // The client changed since its credentials were verified: ask the backend.
                Ok(Answer::CallerStale) => self.lookups.forget_client(&client_key),
                Ok(_) => return respond(session, ctx, StatusCode::OK, &[], inactive()).await,
                Err(Unavailable) => return unavailable(session, ctx).await,
            }
        }
        // Unknown client credentials: the backend checks them, on the caller's own
        // request. The client's marker is read first, so a change that lands while the
        // backend checks still makes the remembered credentials stale.
        let marker = self.lookups.client_marker(&client_id).await;
        match self.lookups.backend.introspect_as_caller(caller_headers(session), body, Some(&ctx.traceparent)).await {
            Ok(reply) => {
                let status = reply.status;
                let body = reply.body.clone();
                let introspector =
                    reply.headers.get(INTROSPECTOR_HEADER).and_then(|v| v.to_str().ok()).and_then(Introspector::from_header_value);
                if let (StatusCode::OK, Some(introspector)) = (status, introspector) {
                    // A caller that may not see every token can get an inactive answer
                    // for a live token: that one is not the token's answer, not cached.
                    let complete =
                        serde_json::from_slice::<Introspection>(&body).is_ok_and(|answer| introspector.answer_is_complete(&answer));
                    if complete {
                        self.lookups.fill_token_from(&presented, reply).await;
                    }
                    if let Some(marker) = marker.filter(|_| introspector.client_id == client_id) {
                        self.lookups.remember_client(client_key, introspector, marker);
                    }
                }
                let extra: Vec<(&'static str, String)> =
                    if status == StatusCode::UNAUTHORIZED { vec![("www-authenticate", "Basic realm=\"quantaid\"".into())] } else { vec![] };
                respond(session, ctx, status, &extra, Some(body)).await
            }
            Err(Unavailable) => unavailable(session, ctx).await,
        }
    }
}

/// The parts of the caller's request the backend needs to authenticate it again.
fn caller_headers(session: &Session) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in [http::header::AUTHORIZATION, http::header::CONTENT_TYPE] {
        if let Some(v) = session.req_header().headers.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    headers
}

/// Asks the backend again about remembered credentials past their TTL, with the request
/// that found them so: accepted, they are remembered afresh (with the marker read before
/// asking); refused, they are forgotten; unanswered, the next request tries again.
async fn reverify(lookups: &Lookups, verified: &VerifiedClient, key: String, client_id: &str, headers: http::HeaderMap, body: Bytes) {
    let marker = lookups.client_marker(client_id).await;
    let reply = match lookups.backend.introspect_as_caller(headers, body, None).await {
        Ok(reply) => reply,
        Err(Unavailable) => return verified.refresh_failed(),
    };
    let introspector = reply.headers.get(INTROSPECTOR_HEADER).and_then(|v| v.to_str().ok()).and_then(Introspector::from_header_value);
    match (reply.status, introspector, marker) {
        (StatusCode::OK, Some(introspector), Some(marker)) if introspector.client_id == client_id => {
            lookups.remember_client(key, introspector, marker)
        }
        (StatusCode::UNAUTHORIZED, _, _) => lookups.forget_client(&key),
        _ => verified.refresh_failed(),
    }
}
