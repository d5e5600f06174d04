#!/usr/bin/env python3
"""Evaluates, through a live Prometheus's HTTP API, every query of the dashboard (panel
targets and template variables) and every recording rule of the rule file, and fails
unless each returns data: no error, a non-empty result, and at least one finite value
(a series that is only NaN shows as nothing in Grafana). Also checks that Prometheus
itself evaluates every rule of the file without error and that every target is up.

    live_queries.py PROMETHEUS_URL DASHBOARD_JSON RULES_YML NAMESPACE RATE_INTERVAL
"""
import json
import math
import sys
import urllib.parse
import urllib.request

import yaml


def api(base: str, path: str, **params) -> dict:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def finite_values(result: dict) -> int:
    kind, data = result["resultType"], result["result"]
    if kind == "scalar":
        return int(math.isfinite(float(data[1])))
    return sum(1 for series in data if math.isfinite(float(series["value"][1])))


def panel_queries(dashboard: dict):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]


def main(prom: str, dashboard_file: str, rules_file: str, namespace: str, rate_interval: str) -> int:
    dashboard = json.load(open(dashboard_file))
    rules = yaml.safe_load(open(rules_file))
    failures = []

    def substitute(expr: str) -> str:
        # What Grafana does with the variables when every pod of the namespace is shown.
        return (expr.replace("$__rate_interval", rate_interval)
                .replace("$namespace", namespace)
                .replace("$pod", ".*"))

    def check(name: str, expr: str):
        reply = api(prom, "query", query=expr)
        if reply.get("status") != "success":
            failures.append(f"{name}: error {reply.get('errorType')}: {reply.get('error')}\n    {expr}")
        elif not reply["data"]["result"]:
            failures.append(f"{name}: empty result\n    {expr}")
        elif finite_values(reply["data"]) == 0:
            failures.append(f"{name}: only NaN or infinite values\n    {expr}")
        else:
            print(f"ok   {name}: {len(reply['data']['result']) if isinstance(reply['data']['result'], list) else 1} series")

    # Template variables: Grafana runs label_values(<selector>, <label>) as a series query.
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        selector, _, label = query[len("label_values("):-1].rpartition(",")
        reply = api(prom, f"label/{label.strip()}/values", **{"match[]": substitute(selector.strip())})
        if reply.get("status") != "success" or not reply["data"]:
            failures.append(f"variable ${variable['name']}: no values from {query}")
        else:
            print(f"ok   variable ${variable['name']}: {reply['data']}")

    for name, expr in panel_queries(dashboard):
        check(name, substitute(expr))

    recording = [r for g in rules["groups"] for r in g["rules"] if "record" in r]
    for rule in recording:
        check(f"rule {rule['record']} (expression)", rule["expr"])
        # The series Prometheus recorded itself from the same rule file.
        check(f"rule {rule['record']} (recorded)", rule["record"])

    loaded = {r["name"]: r for g in api(prom, "rules")["data"]["groups"] for r in g["rules"]}
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        name = rule.get("record") or rule.get("alert")
        state = loaded.get(name)
        if state is None:
            failures.append(f"rule {name}: not loaded by Prometheus")
        elif state.get("health") != "ok":
            failures.append(f"rule {name}: health {state.get('health')}: {state.get('lastError')}")

    for target in api(prom, "targets")["data"]["activeTargets"]:
        if target["health"] != "up":
            failures.append(f"target {target['labels'].get('job')}: {target['health']} {target.get('lastError')}")

    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    total = sum(1 for _ in panel_queries(dashboard)) + 2 * len(recording)
    print(f"live queries: {total - len(failures)} of {total} checks returned data" if not failures
          else f"live queries: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
