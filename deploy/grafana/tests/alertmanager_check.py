#!/usr/bin/env python3
"""Against a running Alertmanager loaded with deploy/grafana/alertmanager.yml: RedisDown
inhibits LowCacheHitRate in the same namespace (not in another one), and critical and
warning alerts reach their receivers.

    alertmanager_check.py ALERTMANAGER_URL
"""
import json
import sys
import time
import urllib.request


def request(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def main(base):
    alerts = [
        {"alertname": "RedisDown", "namespace": "ci", "pod": "p1", "severity": "critical"},
        {"alertname": "LowCacheHitRate", "namespace": "ci", "severity": "warning"},
        {"alertname": "LowCacheHitRate", "namespace": "other", "severity": "warning"},
    ]
    request(base, "POST", "/api/v2/alerts", [{"labels": a, "annotations": {"summary": "test"}} for a in alerts])
    expected = {
        ("RedisDown", "ci"): ("active", "oncall-critical"),
        ("LowCacheHitRate", "ci"): ("suppressed", "slack-warnings"),
        ("LowCacheHitRate", "other"): ("active", "slack-warnings"),
    }
    seen = {}
    for _ in range(50):  # inhibitions are computed as alerts arrive: allow a moment
        seen = {}
        for a in request(base, "GET", "/api/v2/alerts"):
            key = (a["labels"]["alertname"], a["labels"]["namespace"])
            seen[key] = (a["status"]["state"], ",".join(r["name"] for r in a["receivers"]))
        if seen == expected:
            print("alertmanager: RedisDown inhibits LowCacheHitRate in its namespace only; receivers as routed")
            return 0
        time.sleep(0.2)
    print(f"FAIL alertmanager: expected {expected}, got {seen}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
