#!/usr/bin/env python3
"""Checks the Grafana provisioning files: valid YAML of provisioning version 1, unique
datasource uids, the Loki datasource's derived field links `trace_id` to a provisioned
tracing datasource, the dashboard's $datasource variable has a provisioned datasource of
its type, and the dashboard provider points at a directory.

    check_provisioning.py DATASOURCES_YAML DASHBOARDS_YAML DASHBOARD_JSON
"""
import json
import sys

import yaml


def main(datasources_file, dashboards_file, dashboard_file):
    problems = []
    ds = yaml.safe_load(open(datasources_file))
    providers = yaml.safe_load(open(dashboards_file))
    dashboard = json.load(open(dashboard_file))
    if ds.get("apiVersion") != 1 or providers.get("apiVersion") != 1:
        problems.append("provisioning files must have apiVersion 1")
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    if len(by_uid) != len(ds["datasources"]):
        problems.append("datasource uids are not unique")
    lokis = [d for d in ds["datasources"] if d["type"] == "loki"]
    fields = [f for d in lokis for f in d.get("jsonData", {}).get("derivedFields", [])]
    trace_links = [f for f in fields if f.get("matcherRegex") == "trace_id" and f.get("matcherType") == "label"]
    if not trace_links:
        problems.append("no Loki derived field on the trace_id structured metadata")
    for f in trace_links:
        target = by_uid.get(f.get("datasourceUid"))
        if target is None or target["type"] not in ("tempo", "jaeger", "zipkin"):
            problems.append(f"derived field {f['name']} links to {f.get('datasourceUid')!r}, not a provisioned tracing datasource")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "datasource" and not any(d["type"] == variable["query"] for d in ds["datasources"]):
            problems.append(f"no provisioned datasource of type {variable['query']} for ${variable['name']}")
    for p in providers["providers"]:
        if p.get("type") != "file" or not p.get("options", {}).get("path"):
            problems.append(f"dashboard provider {p.get('name')} is not a file provider with a path")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    print("provisioning: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
