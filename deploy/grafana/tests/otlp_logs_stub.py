#!/usr/bin/env python3
"""A local stand-in for Loki's OTLP endpoint, and the checks on what it received.

    otlp_logs_stub.py serve PORT RECORDS_FILE
        Accepts OTLP/HTTP protobuf log exports on POST /v1/logs, decodes each with the
        OpenTelemetry protobuf definitions, and appends every log record, with its
        resource, as one JSON line to RECORDS_FILE. GET /health answers 200.

    otlp_logs_stub.py check RECORDS_FILE NAMESPACE
        Fails unless both sidecars' records arrived as Loki would index them (see
        deploy/grafana/README.md): resource attributes service.name (the app),
        k8s.namespace.name, k8s.pod.name and k8s.container.name (the chart's container
        name for that sidecar: Loki's container label), nothing per-request in the
        resource (labels must stay low-cardinality); a severity for every record; the access lines with
        method, path, status and duration as attributes and the request's trace id as
        the record's trace context (Loki's `trace_id` structured metadata); one request
        seen under the same trace id by both the proxy and the backend; no credential.
"""
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Each sidecar's service.name, and the name of its container in the Helm chart's pod.
CONTAINERS = {"quantaid-proxy": "proxy", "quantaid-backend": "backend"}
SERVICES = set(CONTAINERS)
SEVERITIES = {"error": 17, "warn": 13, "info": 9, "debug": 5, "trace": 1}
# What a resource may carry: identity of the process, never of a request.
RESOURCE_KEYS = re.compile(r"^(service\.name|k8s\.(namespace|pod|container|node|deployment|replicaset)\.name|telemetry\.sdk\.\w+)$")
CREDENTIAL = re.compile(r"\bq(st|at|rt|mt|cs)_[A-Za-z0-9_-]{46}\b")
MAX_BODY = 16 << 20


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def serve(port: str, records_file: str) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status, body=b"", content_type="application/x-protobuf"):
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.reply(200 if self.path == "/health" else 404, b"ok", "text/plain")

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            if self.path != "/v1/logs" or not 0 < length <= MAX_BODY:
                return self.reply(400, b"expected a protobuf body on /v1/logs", "text/plain")
            if self.headers.get("content-type") != "application/x-protobuf":
                return self.reply(415, b"expected application/x-protobuf", "text/plain")
            request = ExportLogsServiceRequest()
            try:
                request.ParseFromString(self.rfile.read(length))
            except Exception as e:  # a malformed export is the sender's bug: say so
                print(f"undecodable export: {e}", flush=True)
                return self.reply(400, b"undecodable", "text/plain")
            lines = []
            for resource_logs in request.resource_logs:
                resource = {kv.key: any_value(kv.value) for kv in resource_logs.resource.attributes}
                for scope_logs in resource_logs.scope_logs:
                    for r in scope_logs.log_records:
                        lines.append(json.dumps({
                            "resource": resource,
                            "scope": scope_logs.scope.name,
                            "time_unix_nano": r.time_unix_nano,
                            "severity_number": r.severity_number,
                            "severity_text": r.severity_text,
                            "body": any_value(r.body),
                            "attributes": {kv.key: any_value(kv.value) for kv in r.attributes},
                            "trace_id": r.trace_id.hex(),
                            "span_id": r.span_id.hex(),
                        }))
            with lock, open(records_file, "a") as f:
                f.writelines(line + "\n" for line in lines)
            print(f"received {len(lines)} records", flush=True)
            self.reply(200, ExportLogsServiceResponse().SerializeToString())

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()


def check(records_file: str, namespace: str) -> int:
    try:
        records = [json.loads(line) for line in open(records_file)]
    except FileNotFoundError:
        records = []
    problems = []
    by_service = {s: [r for r in records if r["resource"].get("service.name") == s] for s in SERVICES}
    for service, own in by_service.items():
        if not own:
            problems.append(f"no log record from {service}")
    for r in records:
        res = r["resource"]
        where = f"{res.get('service.name')}: {r.get('body')!r}"
        if res.get("service.name") not in SERVICES:
            problems.append(f"unknown service.name {res.get('service.name')!r}")
        if res.get("k8s.namespace.name") != namespace or not res.get("k8s.pod.name"):
            problems.append(f"{where}: resource lacks namespace {namespace!r} or pod: {res}")
        if res.get("k8s.container.name") != CONTAINERS.get(res.get("service.name")):
            problems.append(f"{where}: resource's container is {res.get('k8s.container.name')!r}, "
                            f"not {CONTAINERS.get(res.get('service.name'))!r}: {res}")
        for key in res:
            if not RESOURCE_KEYS.match(key):
                problems.append(f"{where}: resource attribute {key!r} would be a high-cardinality or unexpected label")
        if SEVERITIES.get(r["severity_text"]) != r["severity_number"]:
            problems.append(f"{where}: severity {r['severity_text']!r}/{r['severity_number']}")
        if not r["body"]:
            problems.append(f"{where}: empty body")
        if "trace_id" in r["attributes"] or "level" in r["attributes"] or "timestamp" in r["attributes"]:
            problems.append(f"{where}: trace_id, level or timestamp duplicated as attributes")
        if CREDENTIAL.search(json.dumps(r)):
            problems.append(f"{where}: a credential reached the logs")
    traces = {}
    for service, own in by_service.items():
        access = [r for r in own if r["body"] == "request completed"]
        if not access:
            problems.append(f"{service}: no access log record")
        for r in access:
            missing = {"method", "path", "status", "duration_ms"} - set(r["attributes"])
            if missing or not re.fullmatch(r"[0-9a-f]{32}", r["trace_id"]) or r["trace_id"] == "0" * 32:
                problems.append(f"{service}: access record without {sorted(missing)} or trace id: {r}")
                break
        traces[service] = {r["trace_id"] for r in access}
    shared = traces.get("quantaid-proxy", set()) & traces.get("quantaid-backend", set())
    if not shared:
        problems.append("no trace id appears in both the proxy's and the backend's access records")
    for p in problems[:20]:
        print(f"FAIL {p}", file=sys.stderr)
    levels = {}
    for r in records:
        levels[r["severity_text"]] = levels.get(r["severity_text"], 0) + 1
    # What went wrong during the run, for whoever reads the CI log.
    notable = {}
    for r in records:
        if r["severity_text"] in ("error", "warn"):
            key = (r["resource"].get("service.name"), r["severity_text"], r["body"])
            notable[key] = notable.get(key, 0) + 1
    for (service, level, body), n in sorted(notable.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {n:5d} x {service} {level}: {body}")
    print(f"otlp logs: {len(records)} records ({', '.join(f'{s}: {len(v)}' for s, v in sorted(by_service.items()))}; "
          f"levels {levels}; {len(shared)} trace ids seen by both sidecars): " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
