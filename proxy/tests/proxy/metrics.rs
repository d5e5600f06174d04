//! Metric labels come from closed sets in both sidecars: whatever methods and paths
//! clients send through the proxy, the number of series on each `/metrics` stays fixed
//! (known methods else `other`, route templates else `unmatched`).

use reqwest::Method;

use crate::stack::*;

/// The series of the request metrics on one `/metrics` page (not their values).
async fn request_series(stack: &Stack, url: &str) -> Vec<String> {
    let text = stack.http.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("quantaid_http_request") || l.starts_with("quantaid_upstream_request"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

/// Sends `rounds` requests through the proxy, each with a method and a path never
/// used before; the proxy passes them on to the backend.
async fn unknown_methods_and_paths(stack: &Stack, round: &str, rounds: usize) {
    for i in 0..rounds {
        let method = Method::from_bytes(format!("VERB{round}X{i}").as_bytes()).unwrap();
        stack.http.request(method, stack.at(0, &format!("/nope/{round}/{i}"))).send().await.unwrap();
        let method = Method::from_bytes(format!("PROBE{round}{i}").as_bytes()).unwrap();
        stack.http.request(method, stack.at(0, "/v1/auth/login")).send().await.unwrap();
        stack.http.get(stack.at(0, &format!("/v1/users/{i}/x{round}"))).send().await.unwrap();
    }
}

#[tokio::test]
async fn unknown_methods_and_paths_add_no_series_in_either_sidecar() {
    let stack = Stack::start(1).await;
    let pages = [stack.proxies[0].metrics_url.clone(), stack.backend.metrics_url.clone()];
    // One round creates the `other` and `unmatched` series; later rounds must add none.
    unknown_methods_and_paths(&stack, "a", 3).await;
    let mut before = Vec::new();
    for page in &pages {
        before.push(request_series(&stack, page).await);
    }
    unknown_methods_and_paths(&stack, "b", 200).await;
    for (page, before) in pages.iter().zip(before) {
        let after = request_series(&stack, page).await;
        let added: Vec<_> = after.iter().filter(|s| !before.contains(s)).take(5).collect();
        assert_eq!(after.len(), before.len(), "{page}: new series {added:?}");
        let text = stack.http.get(page).send().await.unwrap().text().await.unwrap();
        assert!(text.contains(r#"quantaid_http_requests_total{method="other",path="unmatched",status="404"} 203"#), "{page}:\n{text}");
        assert!(!text.contains("VERB") && !text.contains("/nope/"), "{page}: a client-chosen value became a label");
    }
}

/// The process metrics and gauges the dashboard and the alerts read exist on both pages.
#[tokio::test]
async fn both_sidecars_export_process_memory_and_its_limit() {
    let stack = Stack::start(1).await;
    for page in [&stack.proxies[0].metrics_url, &stack.backend.metrics_url] {
        let text = stack.http.get(page).send().await.unwrap().text().await.unwrap();
        for name in ["process_resident_memory_bytes ", "process_cpu_seconds_total ", "quantaid_memory_limit_bytes "] {
            assert!(text.contains(name), "{page}: {name}missing");
        }
    }
    let proxy = stack.http.get(&stack.proxies[0].metrics_url).send().await.unwrap().text().await.unwrap();
    assert!(proxy.contains("quantaid_bloom_last_refresh_timestamp_seconds "), "{proxy}");
    let backend = stack.http.get(&stack.backend.metrics_url).send().await.unwrap().text().await.unwrap();
    for name in ["quantaid_sessions_active ", "quantaid_cache_invalidations_pending "] {
        assert!(backend.contains(name), "{name}missing");
    }
}
