//! Metric label rules both sidecars share. Every label value comes from a closed set,
//! whatever a client sends: a client-chosen value would add a new series per request
//! and grow `/metrics` without bound.

/// The `method` label: a standard HTTP method, else `other`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// The `status` label: the status code the sidecar answered. The sidecars choose it,
/// never the client, so its values are the few codes they produce; anything outside
/// 100–599 (never sent, but a number all the same) is reported as `other`.
pub fn status_label(status: u16) -> String {
    if (100..600).contains(&status) {
        status.to_string()
    } else {
        "other".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        for m in ["RANDOMVERB1", "get", "PROPFIND", "", "G\u{e9}T"] {
            assert_eq!(method_label(m), "other", "{m:?}");
        }
        assert_eq!(status_label(503), "503");
        assert_eq!(status_label(0), "other");
        assert_eq!(status_label(999), "other");
    }
}
