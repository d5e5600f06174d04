use reqwest::StatusCode;
use serde_json::json;

use quantaid_test_stack::*;

#[tokio::test]
async fn client_credentials_with_basic_or_body_auth() {
    let app = TestApp::start().await;
    let client = app.create_client(&["client_credentials"], &["read", "write"]).await;
    assert!(client.1.starts_with("qcs_"));

    let r = app.post_form("/oauth/token", Some((&client.0, &client.1)), &[("grant_type", "client_credentials"), ("scope", "read")]).await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let (status, t) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "read");
    assert_eq!(t["expires_in"], 3600);
    assert!(t.get("refresh_token").is_none(), "no refresh token for client_credentials");
    let access = t["access_token"].as_str().unwrap();
    assert!(access.starts_with("qat_"));

    let form = [("grant_type", "client_credentials"), ("client_id", client.0.as_str()), ("client_secret", client.1.as_str())];
    let (status, t) = json_of(app.post_form("/oauth/token", None, &form).await).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["scope"], "read write", "no scope asked: all of the client's");

    // Only digests are stored.
    let pg = app.pg().await;
    let rows: i64 =
        pg.query_one("SELECT count(*) FROM oauth_tokens WHERE access_token = sha256($1::text::bytea)", &[&access]).await.unwrap().get(0);
    assert_eq!(rows, 1);
    assert_eq!(app.metric("quantaid_oauth_tokens_issued_total{grant_type=\"client_credentials\"}").await, 2.0);
}

#[tokio::test]
async fn token_endpoint_errors() {
    let app = TestApp::start().await;
    let client = app.create_client(&["client_credentials"], &["read"]).await;
    let wrong = (client.0.clone(), "qcs_wrong".to_string());
    let r = app.post_form("/oauth/token", Some((&wrong.0, &wrong.1)), &[("grant_type", "client_credentials")]).await;
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_client");
    let r = app.post_form("/oauth/token", None, &[("grant_type", "client_credentials")]).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_client");
    // Two authentication methods at once.
    let r = app
        .post_form("/oauth/token", Some((&client.0, &client.1)), &[("grant_type", "client_credentials"), ("client_secret", &client.1)])
        .await;
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request");
    let (status, e) = app.token(&client, &[("grant_type", "authorization_code")]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")));
    let (status, e) = app.token(&client, &[("grant_type", "password"), ("username", "x"), ("password", "y")]).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")),
        "grant not allowed for this client"
    );
    let (status, e) = app.token(&client, &[("grant_type", "client_credentials"), ("scope", "read admin")]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    let (status, e) = app.token(&client, &[("scope", "read")]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    // Unknown parameters are ignored (RFC 6749 §3.2); empty ones count as absent.
    let (status, _) = app.token(&client, &[("grant_type", "client_credentials"), ("audience", "x"), ("scope", "")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn introspection_and_revocation() {
    let app = TestApp::start().await;
    let rs = app.create_client(&["client_credentials"], &["read"]).await;
    let (_, t) = app.token(&rs, &[("grant_type", "client_credentials")]).await;
    let access = t["access_token"].as_str().unwrap().to_string();

    let info = app.introspect(&rs, &access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], rs.0.as_str());
    assert_eq!(info["sub"], rs.0.as_str());
    assert_eq!(info["scope"], "read");
    assert_eq!(info["token_type"], "Bearer");
    let (exp, iat) = (info["exp"].as_i64().unwrap(), info["iat"].as_i64().unwrap());
    assert!((3599..=3601).contains(&(exp - iat)), "{info}");

    // Introspection needs client authentication.
    let r = app.post_form("/oauth/introspect", None, &[("token", &access)]).await;
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "invalid_client");
    // Garbage is simply inactive.
    for garbage in ["nope", "qat_AAAA", "qst_x", &access.replace("qat_", "qrt_")] {
        assert_eq!(app.introspect(&rs, garbage).await, json!({"active": false}));
    }

    // Another client may not revoke it.
    let other = app.create_client(&["client_credentials"], &["read"]).await;
    let r = app.post_form("/oauth/revoke", Some((&other.0, &other.1)), &[("token", &access)]).await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
    assert_eq!(app.introspect(&rs, &access).await["active"], true);

    let r = app.post_form("/oauth/revoke", Some((&rs.0, &rs.1)), &[("token", &access)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.introspect(&rs, &access).await, json!({"active": false}));
    // Revoking again, or revoking garbage, is still 200 (RFC 7009).
    for token in [access.as_str(), "garbage"] {
        let r = app.post_form("/oauth/revoke", Some((&rs.0, &rs.1)), &[("token", token)]).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn password_grant_refresh_rotation_and_reuse_detection() {
    let app = TestApp::start().await;
    let user_id = app.create_user("alice").await;
    let client = app.create_client(&["password", "refresh_token"], &["read", "write"]).await;
    let (status, t1) =
        app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD), ("scope", "read write")]).await;
    assert_eq!(status, StatusCode::OK, "{t1}");
    let refresh1 = t1["refresh_token"].as_str().unwrap().to_string();
    assert!(refresh1.starts_with("qrt_"));
    let info = app.introspect(&client, t1["access_token"].as_str().unwrap()).await;
    assert_eq!((info["sub"].as_str(), info["username"].as_str()), (Some(user_id.as_str()), Some("alice")));
    let info = app.introspect(&client, &refresh1).await;
    assert_eq!((info["active"].as_bool(), info["token_type"].as_str()), (Some(true), Some("refresh_token")));

    // A wrong password is invalid_grant, not invalid_client.
    let (status, e) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", "wrong password")]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    // Rotation: each use yields a new refresh token; scope may narrow but not widen.
    let (status, e) = app.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", &refresh1), ("scope", "read admin")]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    let (status, t2) = app.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", &refresh1), ("scope", "read")]).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    assert_eq!(t2["scope"], "read");
    let refresh2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    assert_eq!(app.introspect(&client, &refresh1).await["active"], false);
    let access2 = t2["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.introspect(&client, &access2).await["active"], true);

    // Reusing the rotated token revokes the whole family, including the newest tokens.
    let (status, e) = app.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", &refresh1)]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(app.introspect(&client, &access2).await["active"], false);
    assert_eq!(app.introspect(&client, &refresh2).await["active"], false);
    let (status, _) = app.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", &refresh2)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A refresh token only works for the client it was issued to.
    let (_, t3) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let other = app.create_client(&["refresh_token"], &["read", "write"]).await;
    let (status, e) = app.token(&other, &[("grant_type", "refresh_token"), ("refresh_token", t3["refresh_token"].as_str().unwrap())]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family() {
    let app = TestApp::start().await;
    app.create_user("alice").await;
    let client = app.create_client(&["password", "refresh_token"], &["read"]).await;
    let (_, t1) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let (_, t2) = app.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", t1["refresh_token"].as_str().unwrap())]).await;
    let r = app.post_form("/oauth/revoke", Some((&client.0, &client.1)), &[("token", t2["refresh_token"].as_str().unwrap())]).await;
    assert_eq!(r.status(), StatusCode::OK);
    for t in [&t1, &t2] {
        assert_eq!(app.introspect(&client, t["access_token"].as_str().unwrap()).await["active"], false);
    }
}

#[tokio::test]
async fn metadata_and_userinfo() {
    let app = TestApp::start().await;
    let (status, meta) = json_of(app.get("/.well-known/oauth-authorization-server", None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["issuer"], "http://localhost:8080");
    assert_eq!(meta["token_endpoint"], "http://localhost:8080/oauth/token");
    assert_eq!(meta["introspection_endpoint"], "http://localhost:8080/oauth/introspect");
    assert_eq!(meta["revocation_endpoint"], "http://localhost:8080/oauth/revoke");
    assert_eq!(meta["grant_types_supported"], json!(["client_credentials", "password", "refresh_token"]));

    let id = app.create_user("alice").await;
    let client = app.create_client(&["password", "client_credentials"], &["read"]).await;
    let (_, t) = app.token(&client, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let (status, info) = json_of(app.get("/v1/userinfo", t["access_token"].as_str()).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info, json!({"sub": id, "username": "alice", "email": "alice@example.com"}));

    let (_, t) = app.token(&client, &[("grant_type", "client_credentials")]).await;
    assert_eq!(error_of(app.get("/v1/userinfo", t["access_token"].as_str()).await, StatusCode::FORBIDDEN).await, "forbidden");
    let session = app.login("alice", PASSWORD).await;
    assert_eq!(error_of(app.get("/v1/userinfo", Some(&session)).await, StatusCode::UNAUTHORIZED).await, "unauthorized");
    assert_eq!(error_of(app.get("/v1/userinfo", None).await, StatusCode::UNAUTHORIZED).await, "unauthorized");
}

#[tokio::test]
async fn client_registration_validates_and_needs_admin() {
    let app = TestApp::start().await;
    let bad = [
        json!({"name": "x", "grant_types": [], "scopes": []}),
        json!({"name": "x", "grant_types": ["implicit"], "scopes": []}),
        json!({"name": "", "grant_types": ["client_credentials"]}),
        json!({"name": "x", "grant_types": ["client_credentials"], "scopes": ["has space"]}),
        json!({"name": "x", "grant_types": ["client_credentials"], "redirect_uris": ["javascript:alert(1)"]}),
    ];
    for body in bad {
        let r = app.post_json("/v1/clients", Some(ADMIN_TOKEN), body.clone()).await;
        assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await, "invalid_request", "{body}");
    }
    app.create_user("alice").await;
    let session = app.login("alice", PASSWORD).await;
    let r = app.post_json("/v1/clients", Some(&session), json!({"name": "x", "grant_types": ["client_credentials"]})).await;
    assert_eq!(error_of(r, StatusCode::FORBIDDEN).await, "forbidden");
}
