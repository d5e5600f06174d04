//! Metric labels come from closed sets: whatever methods and paths clients send, the
//! number of series on `/metrics` stays fixed (known methods else `other`, route
//! templates else `unmatched`).

use reqwest::Method;

use quantaid_test_stack::*;

/// The series of the request metrics (not their values).
async fn request_series(app: &TestApp) -> Vec<String> {
    let text = app.http.get(&app.metrics_url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("quantaid_http_request"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

/// Sends `rounds` requests, each with a method and a path never used before.
async fn unknown_methods_and_paths(app: &TestApp, round: &str, rounds: usize) {
    for i in 0..rounds {
        let method = Method::from_bytes(format!("VERB{round}X{i}").as_bytes()).unwrap();
        app.http.request(method, app.url(&format!("/nope/{round}/{i}"))).send().await.unwrap();
        app.http
            .request(Method::from_bytes(format!("PROBE{round}{i}").as_bytes()).unwrap(), app.url("/v1/auth/login"))
            .send()
            .await
            .unwrap();
        app.http.get(app.url(&format!("/v1/users/{i}/x{round}"))).send().await.unwrap();
    }
}

#[tokio::test]
async fn unknown_methods_and_paths_add_no_series() {
    let app = TestApp::start().await;
    // One round creates the `other` and `unmatched` series; later rounds must add none.
    unknown_methods_and_paths(&app, "a", 3).await;
    let before = request_series(&app).await;
    unknown_methods_and_paths(&app, "b", 200).await;
    let after = request_series(&app).await;
    assert_eq!(after.len(), before.len(), "new series: {:?}", after.iter().filter(|s| !before.contains(s)).take(5).collect::<Vec<_>>());
    let text = app.http.get(&app.metrics_url).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"quantaid_http_requests_total{method="other",path="unmatched",status="404"} 203"#), "{text}");
    assert!(!text.contains("VERB") && !text.contains("/nope/"), "a client-chosen value became a label");
}
