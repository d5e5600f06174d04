//! `POST /oauth/introspect`: the client's credentials and the token, both from the
//! cache when possible; credentials this replica does not know are checked by the backend.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use quantaid_protocol::cache::hex_digest;
use quantaid_protocol::introspection::{Introspector, INTROSPECTOR_HEADER};
use quantaid_protocol::oauth_form::{content_type_is, presented_client, Form, FORM_CONTENT_TYPE};
use quantaid_protocol::wire::{Introspection, IntrospectionOwner};

use crate::backend::Unavailable;
use crate::endpoints::Call;
use crate::lookup::{Answer, Lookups, Verified, VerifiedClient};
use crate::respond::Reply;
use crate::service::QuantaProxy;

/// The client-authentication challenge (RFC 6749 §5.2).
const BASIC_CHALLENGE: HeaderValue = HeaderValue::from_static("Basic realm=\"quantaid\"");

impl QuantaProxy {
    /// `POST /oauth/introspect`: the client credentials and the token, both from the
    /// cache when possible.
    pub(crate) async fn introspect(&self, call: Call<'_>) -> Reply {
        if !content_type_is(call.headers, FORM_CONTENT_TYPE) {
            let description = format!("Content-Type must be {FORM_CONTENT_TYPE}");
            return Reply::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request", &description);
        }
        let Ok(text) = std::str::from_utf8(&call.body) else {
            return Reply::error(StatusCode::BAD_REQUEST, "invalid_request", "request body is not valid UTF-8");
        };
        let form = match Form::parse(text) {
            Ok(form) => form,
            Err(e) => return Reply::error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
        };
        let client = match presented_client(call.headers, &form) {
            Ok(client) => client,
            Err(e) if e.is_invalid_client() => {
                return Reply::error(StatusCode::UNAUTHORIZED, "invalid_client", e.description())
                    .with_header("www-authenticate", BASIC_CHALLENGE)
            }
            Err(e) => return Reply::error(StatusCode::BAD_REQUEST, "invalid_request", e.description()),
        };
        let Some(presented) = form.get("token").map(str::to_string) else {
            return Reply::error(StatusCode::BAD_REQUEST, "invalid_request", "missing parameter token");
        };
        let trace = Some(call.traceparent);
        // The credentials as presented name them in this replica's memory (by digest);
        // the client id they claim names its lifecycle marker.
        let client_id = client.client_id.clone();
        let client_key = hex_digest(&format!("{}:{}", client.client_id, client.secret));
        if let Some((verified, how_recently)) = self.lookups.verified_client(&client_key) {
            if how_recently == Verified::Stale && verified.start_refresh() {
                let (lookups, verified, key) = (self.lookups.clone(), verified.clone(), client_key.clone());
                let (headers, body, client_id) = (caller_headers(call.headers), call.body.clone(), client_id.clone());
                tokio::spawn(async move { reverify(&lookups, &verified, key, &client_id, headers, body).await });
            }
            let inactive = || Reply::ok(Bytes::from_static(b"{\"active\":false}"));
            match self.lookups.token_as(&presented, Some(&verified), trace).await {
                Ok(Answer::Found(body)) => {
                    // The same rule as the backend's (quantaid_protocol::introspection).
                    let Ok(owner) = serde_json::from_str::<IntrospectionOwner>(&body) else { return Reply::unavailable() };
                    return if verified.introspector.may_see_token(&owner) { Reply::ok(Bytes::from(body.to_string())) } else { inactive() };
                }
                // The client changed since its credentials were verified: ask the backend.
                Ok(Answer::CallerStale) => self.lookups.forget_client(&client_key),
                Ok(_) => return inactive(),
                Err(Unavailable) => return Reply::unavailable(),
            }
        }
        // Unknown client credentials: the backend checks them, on the caller's own
        // request. The client's marker is read first, so a change that lands while the
        // backend checks still makes the remembered credentials stale.
        let marker = self.lookups.client_marker(&client_id).await;
        match self.lookups.backend.introspect_as_caller(caller_headers(call.headers), call.body.clone(), trace).await {
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
                let answer = Reply::json(status, body);
                if status == StatusCode::UNAUTHORIZED {
                    answer.with_header("www-authenticate", BASIC_CHALLENGE)
                } else {
                    answer
                }
            }
            Err(Unavailable) => Reply::unavailable(),
        }
    }
}

/// The parts of the caller's request the backend needs to authenticate it again.
fn caller_headers(request: &http::HeaderMap) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in [http::header::AUTHORIZATION, http::header::CONTENT_TYPE] {
        if let Some(v) = request.get(&name) {
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
