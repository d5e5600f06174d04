//! docs/openapi.json against the backend's router: every documented operation is a
//! route and every route is documented, except the sidecar-internal `/internal/*`
//! routes, which are no part of the public API and are listed in docs/api.md
//! ("Internal endpoints") instead. The route list is the router's own table
//! (`quantaid_backend::http::routes`), so neither side can drift unnoticed. The proxy's
//! route table is checked against the same document in proxy/tests/proxy/openapi.rs.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use quantaid_test_stack::*;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn read_doc(name: &str) -> String {
    let path = quantaid_testkit::package_dir().join("../docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn openapi() -> Value {
    serde_json::from_str(&read_doc("openapi.json")).expect("docs/openapi.json is JSON")
}

/// `(METHOD, path template)` of every operation in the document, with its object.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for (key, op) in item.as_object().expect("path item") {
            if METHODS.contains(&key.as_str()) {
                out.push((key.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// The operations the backend serves (all but those marked `x-quantaid-backend: false`).
fn documented_for_backend(doc: &Value) -> BTreeSet<(String, String)> {
    operations(doc)
        .into_iter()
        .filter(|(_, _, op)| op.get("x-quantaid-backend") != Some(&Value::Bool(false)))
        .map(|(m, p, _)| (m, p))
        .collect()
}

fn is_internal(path: &str) -> bool {
    path.starts_with("/internal/")
}

fn router_routes() -> Vec<(String, String)> {
    quantaid_backend::http::routes().into_iter().map(|(m, p)| (m.to_string(), p.to_string())).collect()
}

#[test]
fn openapi_lists_exactly_the_public_routes_of_the_router() {
    let routes = router_routes();
    let unique: BTreeSet<_> = routes.iter().cloned().collect();
    assert_eq!(unique.len(), routes.len(), "a route is listed twice: {routes:?}");
    let public: BTreeSet<_> = unique.into_iter().filter(|(_, p)| !is_internal(p)).collect();
    let documented = documented_for_backend(&openapi());
    let undocumented: Vec<_> = public.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&public).collect();
    assert!(undocumented.is_empty(), "routes missing from docs/openapi.json: {undocumented:?}");
    assert!(unrouted.is_empty(), "docs/openapi.json lists operations the backend does not route: {unrouted:?}");
}

#[test]
fn internal_routes_are_in_api_md_and_not_in_openapi() {
    let doc = openapi();
    let in_openapi: Vec<_> = operations(&doc).into_iter().filter(|(_, p, _)| p.starts_with("/internal")).collect();
    assert!(in_openapi.is_empty(), "docs/openapi.json is the public API only: {in_openapi:?}");
    let api_md = read_doc("api.md");
    let internal: Vec<_> = router_routes().into_iter().filter(|(_, p)| is_internal(p)).collect();
    assert!(!internal.is_empty());
    for (method, path) in internal {
        let entry = format!("`{method} {path}");
        assert!(api_md.contains(&entry), "docs/api.md does not describe {method} {path}");
    }
}

/// Every `$ref` of `value` that points into `doc` must resolve.
fn check_refs(doc: &Value, value: &Value, broken: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let resolved = target.strip_prefix('#').and_then(|pointer| doc.pointer(pointer));
                if resolved.is_none() {
                    broken.push(target.clone());
                }
            }
            map.values().for_each(|v| check_refs(doc, v, broken));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v, broken)),
        _ => {}
    }
}

#[test]
fn openapi_document_is_well_formed() {
    let doc = openapi();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "an OpenAPI 3.1 document");
    let mut broken = Vec::new();
    check_refs(&doc, &doc, &mut broken);
    assert!(broken.is_empty(), "unresolved $ref: {broken:?}");

    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: no responses");
        let proxy = op["x-quantaid-proxy"].as_str();
        assert!(
            matches!(proxy, Some("forwarded" | "cached" | "local")),
            "{method} {path}: x-quantaid-proxy must say how the proxy serves it, not {proxy:?}"
        );
        // A templated path segment must be declared as a path parameter.
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            let declared = op["parameters"].as_array().into_iter().flatten().any(|p| {
                let p = p.get("$ref").and_then(Value::as_str).and_then(|r| doc.pointer(&r[1..])).unwrap_or(p);
                p["in"] == "path" && p["name"] == name
            });
            assert!(declared, "{method} {path}: path parameter {name} is not declared");
        }
    }
}

/// A concrete path for a template: `{id}` becomes a fresh UUID.
fn concrete(template: &str) -> String {
    template.replace("{id}", &uuid::Uuid::now_v7().to_string())
}

/// The router, over HTTP: each documented operation reaches a handler (it is neither
/// the unknown-route 404 nor a 405), and every other method on a documented path is a
/// 405. Nothing is authenticated, so no handler changes anything.
#[tokio::test]
async fn the_running_router_serves_what_openapi_lists() {
    let app = TestApp::start().await;
    let documented = documented_for_backend(&openapi());
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let listed = documented.contains(&(method.to_string(), path.clone()));
            let response = app.request(Method::from_bytes(method.as_bytes()).unwrap(), &concrete(path), None).send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if listed {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
                assert_ne!(body["error_description"], "no such endpoint", "{method} {path} is not routed");
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is routed but not in docs/openapi.json: {body}");
            }
        }
    }
}
