//! `POST /oauth/introspect` (RFC 7662).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::Json;
use chrono::Utc;
use quantaid_protocol::introspection::{Introspector, INTROSPECTOR_HEADER};

use crate::domain::oauth::{authenticate_client, introspection};
use crate::error::ApiResult;
use crate::http::extract::FormBody;
use crate::http::no_store;
use crate::SharedState;

/// `POST /oauth/introspect` (form `token=`, optional `token_type_hint`): the caller
/// authenticates as a client, and sees what `quantaid_protocol::introspection` lets it
/// see. The response names the caller and its right (for the caching proxy).
pub async fn introspect(State(state): State<SharedState>, headers: HeaderMap, form: FormBody) -> ApiResult<Response> {
    let conn = state.db.conn().await?;
    let client = authenticate_client(&conn, &headers, &form.0).await?;
    let caller = Introspector::new(&client.client_id, client.scopes.iter().map(String::as_str));
    let body = caller.visible(introspection(&conn, form.require("token")?, Utc::now()).await?);
    let mut response = no_store(Json(body));
    if let Ok(value) = HeaderValue::from_str(&caller.header_value()) {
        response.headers_mut().insert(INTROSPECTOR_HEADER, value);
    }
    Ok(response)
}
