//! docs/openapi.json against the proxy's route table (`quantaid_proxy::routes`): the
//! templates it labels metrics with (`quantaid_protocol::routes::PUBLIC`) are the document's paths, and each operation is
//! answered, cached or forwarded as its `x-quantaid-proxy` says. The backend's router is
//! checked against the same document in identity-backend/tests/api/openapi.rs.

use std::collections::BTreeSet;

use http::Method;
use quantaid_protocol::routes::PUBLIC as TEMPLATES;
use quantaid_proxy::routes::{classify, Route};
use serde_json::Value;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn openapi() -> Value {
    let path = quantaid_testkit::package_dir().join("../docs/openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// `(METHOD, path template, x-quantaid-proxy)` of every operation.
fn operations(doc: &Value) -> Vec<(Method, String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, op) in item.as_object().expect("path item") {
            if METHODS.contains(&key.as_str()) {
                let method = Method::from_bytes(key.to_uppercase().as_bytes()).expect("method");
                let proxy = op["x-quantaid-proxy"].as_str().unwrap_or("missing").to_string();
                out.push((method, path.clone(), proxy));
            }
        }
    }
    out
}

/// How the proxy serves a route, in the document's words.
fn handling(route: &Route) -> &'static str {
    match route {
        Route::Health | Route::Ready => "local",
        Route::Session | Route::Introspect | Route::User(_) | Route::Check => "cached",
        Route::PassThrough => "forwarded",
        Route::Internal => "internal",
    }
}

fn concrete(template: &str) -> String {
    template.replace("{id}", "0190a3c2-7b4e-7000-8000-000000000001")
}

#[test]
fn proxy_templates_are_the_openapi_paths() {
    let doc = openapi();
    let documented: BTreeSet<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
    let templates: BTreeSet<&str> = TEMPLATES.iter().copied().collect();
    let unlabelled: Vec<_> = documented.difference(&templates).collect();
    let undocumented: Vec<_> = templates.difference(&documented).collect();
    assert!(unlabelled.is_empty(), "paths of docs/openapi.json missing from quantaid_protocol::routes::PUBLIC: {unlabelled:?}");
    assert!(undocumented.is_empty(), "proxy templates missing from docs/openapi.json: {undocumented:?}");
}

#[test]
fn proxy_serves_each_operation_as_openapi_says() {
    for (method, path, proxy) in operations(&openapi()) {
        let (route, template) = classify(&method, &concrete(&path));
        assert_eq!(template, path, "{method} {path} is labelled {template}");
        assert_eq!(handling(&route), proxy, "{method} {path}: the proxy's route is {route:?}");
    }
}

#[test]
fn proxy_answers_itself_only_what_openapi_lists() {
    let documented: BTreeSet<(Method, String)> = operations(&openapi()).into_iter().map(|(m, p, _)| (m, p)).collect();
    let methods = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
    for template in TEMPLATES {
        for method in &methods {
            let (route, _) = classify(method, &concrete(template));
            if route != Route::PassThrough {
                assert!(
                    documented.contains(&(method.clone(), template.to_string())),
                    "the proxy answers {method} {template} itself ({route:?}), but docs/openapi.json has no such operation"
                );
            }
        }
    }
}

/// What the proxy forwards, the backend must route (the backend's own test checks the
/// rest of its table against the document).
#[test]
fn every_forwarded_operation_is_a_backend_route() {
    let backend: BTreeSet<(String, String)> =
        quantaid_backend::http::routes().into_iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    for (method, path, proxy) in operations(&openapi()) {
        if proxy == "forwarded" {
            assert!(
                backend.contains(&(method.to_string(), path.clone())),
                "the proxy forwards {method} {path}, which the backend does not route"
            );
        }
    }
}

/// The sidecar-internal routes are not in the public document, and the proxy never
/// forwards them from clients.
#[test]
fn internal_routes_stay_internal() {
    for (method, path) in quantaid_backend::http::routes() {
        if path.starts_with("/internal/") {
            assert_eq!(classify(&method, path).0, Route::Internal, "{method} {path}");
        }
    }
}
