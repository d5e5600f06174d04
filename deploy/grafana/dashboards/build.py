#!/usr/bin/env python3
"""Builds the QuantaID Grafana dashboard, deploy/grafana/dashboards/quantaid.json.

The JSON is generated, never edited by hand: change this file and run

    python3 deploy/grafana/dashboards/build.py > deploy/grafana/dashboards/quantaid.json

`build.py --check deploy/grafana/dashboards/quantaid.json` (run by deploy/grafana/test.sh)
fails when the committed JSON differs from this output or does not parse back through
the SDK's dashboard model. test.sh also evaluates every panel's query against a live
stack (deploy/grafana/tests/live_queries.py), so every metric used here must be exported
by a sidecar.

Label contract (deploy/grafana/README.md): `job` is `quantaid-proxy` or
`quantaid-backend`; every series has `namespace` and `pod`.

Needs PyPI `grafana-foundation-sdk` (the version pinned in deploy/grafana/requirements.txt).
"""
import difflib
import json
import sys

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PROXY = 'job="quantaid-proxy"'
BACKEND = 'job="quantaid-backend"'
# Readiness and liveness probes are not client traffic.
NO_PROBES = 'path!~"/health|/ready"'
RATE = "[$__rate_interval]"
ERRORS = 'status=~"5.."'
IN_USE = 'state="in_use"'
POOL_MAX = 'state="max"'
LE_1S = 'le="1"'
SUCCESS = 'result="success"'
SUCCESS_OR_FAILURE = 'result=~"success|failure"'
ANY_RESULT = 'result=~".+"'
CLEARS = 'scope="all"'


def sel(*matchers: str) -> str:
    """A label selector restricted to the dashboard's namespace and pods."""
    return "{" + ",".join(('namespace=~"$namespace"', 'pod=~"$pod"') + matchers) + "}"


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def graph(title: str, description: str, unit: str, *targets: prometheus.Dataquery, span: int = 8, max_val=None):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(span)
        .fill_opacity(10)
    )
    if max_val is not None:
        panel = panel.max(max_val)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(title: str, description: str, unit: str, target: prometheus.Dataquery, span: int = 4):
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(span)
        .with_target(target)
    )


def ratio(numerator: str, denominator: str, by: str) -> str:
    """numerator / denominator, 0 rather than absent while the numerator has no series."""
    return f"(sum by ({by}) ({numerator}) or 0 * sum by ({by}) ({denominator})) / sum by ({by}) ({denominator})"


def system_overview() -> tuple[str, list]:
    requests = f"rate(quantaid_http_requests_total{sel(NO_PROBES)}{RATE})"
    errors = f"rate(quantaid_http_requests_total{sel(NO_PROBES, ERRORS)}{RATE})"
    buckets = f"rate(quantaid_http_request_duration_seconds_bucket{sel(NO_PROBES)}{RATE})"
    return (
        "System overview",
        [
            graph(
                "Request rate",
                "Requests answered per second by each sidecar, by status code (probes excluded). The proxy's is what clients see.",
                "reqps",
                query(f"sum by (job, status) ({requests})", "{{job}} {{status}}"),
            ),
            graph(
                "5xx ratio",
                "Share of requests answered with a 5xx, per sidecar. HighErrorRate fires above 5 % for 5 minutes; the 99.9 % SLO allows 0.1 %.",
                "percentunit",
                query(ratio(errors, requests, "job"), "{{job}}"),
            ),
            graph(
                "Saturation",
                "Share in use of what runs out: database pool connections (backend), resident memory of the container's memory limit (both sidecars).",
                "percentunit",
                query(
                    f"max by (pod) (quantaid_db_pool_connections{sel(BACKEND, IN_USE)})"
                    f" / max by (pod) (quantaid_db_pool_connections{sel(BACKEND, POOL_MAX)})",
                    "db pool {{pod}}",
                ),
                query(
                    f"max by (job, pod) (process_resident_memory_bytes{sel()}) / max by (job, pod) (quantaid_memory_limit_bytes{sel()})",
                    "memory {{job}} {{pod}}",
                    "B",
                ),
                max_val=1,
            ),
            graph(
                "p95 latency by route",
                "95th percentile of request latency per sidecar and route template.",
                "s",
                query(f"histogram_quantile(0.95, sum by (job, path, le) ({buckets}))", "{{job}} {{path}}"),
                span=12,
            ),
            graph(
                "p99 latency by route",
                "99th percentile of request latency per sidecar and route template.",
                "s",
                query(f"histogram_quantile(0.99, sum by (job, path, le) ({buckets}))", "{{job}} {{path}}"),
                span=12,
            ),
            graph(
                "CPU",
                "CPU time used per second (cores) by each sidecar process.",
                "none",
                query(f"sum by (job, pod) (rate(process_cpu_seconds_total{sel()}{RATE}))", "{{job}} {{pod}}"),
            ),
            graph(
                "Resident memory",
                "Resident memory of each sidecar process, and its container's memory limit (HighMemoryUsage fires above 80 %).",
                "bytes",
                query(f"max by (job, pod) (process_resident_memory_bytes{sel()})", "{{job}} {{pod}}"),
                query(f"max by (job, pod) (quantaid_memory_limit_bytes{sel()})", "limit {{job}} {{pod}}", "B"),
            ),
            graph(
                "Upstream latency p95 (proxy to backend)",
                "95th percentile of the proxy's calls to the backend in its pod, by route template: backend time as the proxy sees it.",
                "s",
                query(
                    f"histogram_quantile(0.95, sum by (path, le) (rate(quantaid_upstream_request_duration_seconds_bucket{sel(PROXY)}{RATE})))",
                    "{{path}}",
                ),
            ),
        ],
    )


def database() -> tuple[str, list]:
    buckets = f"rate(quantaid_db_query_duration_seconds_bucket{sel(BACKEND)}{RATE})"
    return (
        "Database",
        [
            graph(
                "Pool connections",
                "The backend's PostgreSQL pool per pod: connections in use, idle, and the configured maximum.",
                "none",
                query(f"sum by (pod, state) (quantaid_db_pool_connections{sel(BACKEND)})", "{{pod}} {{state}}"),
            ),
            graph(
                "Pool wait timeouts",
                "Requests answered 503 per second because no pooled connection became free within QUANTAID_DB_POOL_WAIT_MS.",
                "reqps",
                query(f"sum by (pod) (rate(quantaid_db_pool_wait_timeouts_total{sel(BACKEND)}{RATE}))", "{{pod}}"),
            ),
            graph(
                "Slow queries (over 1 s)",
                "Database calls per second that took longer than 1 s, by statement name (from the latency histogram).",
                "ops",
                query(
                    f"sum by (query) (rate(quantaid_db_query_duration_seconds_count{sel(BACKEND)}{RATE}))"
                    f" - sum by (query) (rate(quantaid_db_query_duration_seconds_bucket{sel(BACKEND, LE_1S)}{RATE}))",
                    "{{query}}",
                ),
            ),
            graph(
                "Query rate by query",
                "Database calls per second by statement name (the query label) and result.",
                "ops",
                query(f"sum by (query, result) (rate(quantaid_db_queries_total{sel(BACKEND)}{RATE}))", "{{query}} {{result}}"),
                span=12,
            ),
            graph(
                "Query p95 by query",
                "95th percentile of database call latency by statement name. SlowDatabaseQueries fires above 1 s for 5 minutes.",
                "s",
                query(f"histogram_quantile(0.95, sum by (query, le) ({buckets}))", "{{query}}"),
                span=12,
            ),
        ],
    )


def cache() -> tuple[str, list]:
    hits = f"rate(quantaid_cache_hits_total{sel(PROXY)}{RATE})"
    misses = f"rate(quantaid_cache_misses_total{sel(PROXY)}{RATE})"
    return (
        "Cache",
        [
            graph(
                "Hit ratio by kind",
                "Share of the lookups that reached Redis answered from it, by kind (session, token, user). LowCacheHitRate fires below 70 %.",
                "percentunit",
                query(f"sum by (kind) ({hits}) / (sum by (kind) ({hits}) + sum by (kind) ({misses}))", "{{kind}}"),
                max_val=1,
            ),
            graph(
                "Local tier",
                "Lookups per second each proxy answered from its local tier (after a fence), the fence round trips that released them, and full clears of the tier (a marker changed, the Redis connection closed or a fence failed). docs/caching.md, 'The local tier'.",
                "ops",
                query(f"sum by (pod) (rate(quantaid_cache_local_hits_total{sel(PROXY)}{RATE}))", "hits {{pod}}"),
                query(f"sum by (pod) (rate(quantaid_cache_local_fences_total{sel(PROXY)}{RATE}))", "fences {{pod}}", "B"),
                query(f"sum by (pod) (rate(quantaid_cache_local_invalidations_total{sel(PROXY, CLEARS)}{RATE}))", "clears {{pod}}", "C"),
            ),
            graph(
                "Redis up",
                "1 while a proxy's Redis circuit breaker is closed, 0 while open (or before its first lookup).",
                "none",
                query(f"max by (pod) (quantaid_redis_up{sel(PROXY)})", "{{pod}}"),
                max_val=1,
            ),
            graph(
                "Redis memory",
                "used_memory from Redis INFO, as each proxy samples it every 5 s.",
                "bytes",
                query(f"max by (pod) (quantaid_redis_memory_used_bytes{sel(PROXY)})", "{{pod}}"),
            ),
            graph(
                "Fallbacks to the backend",
                "Lookups per second answered by the backend because Redis failed, timed out or its breaker was open.",
                "ops",
                query(f"sum by (pod) (rate(quantaid_cache_fallback_total{sel(PROXY)}{RATE}))", "{{pod}}"),
            ),
            graph(
                "Bloom rejections",
                "Lookups per second answered 'not found' without Redis or the backend: absent from the Bloom filter, or malformed.",
                "ops",
                query(f"sum by (reason) (rate(quantaid_bloom_rejections_total{sel(PROXY)}{RATE}))", "{{reason}}"),
            ),
            graph(
                "Bloom filter age",
                "Seconds since each proxy's Bloom filter last took a snapshot from the backend (every 5 s normally). BloomFilterStale fires above 5 minutes.",
                "s",
                query(f"time() - max by (pod) (quantaid_bloom_last_refresh_timestamp_seconds{sel(PROXY)})", "{{pod}}"),
            ),
            graph(
                "Single-flight coalescing",
                "Cache misses per second that waited for another request's backend call for the same key instead of making their own.",
                "ops",
                query(f"sum by (pod) (rate(quantaid_singleflight_coalesced_total{sel(PROXY)}{RATE}))", "{{pod}}"),
            ),
            graph(
                "Invalidations published and deferred",
                "Revocation markers per second written to Redis (published) or, Redis failing, stored in the outbox (deferred).",
                "ops",
                query(f"sum by (result) (rate(quantaid_cache_invalidations_total{sel(BACKEND)}{RATE}))", "{{result}}"),
            ),
            graph(
                "Invalidation outbox",
                "Revocation markers waiting in the backend's outbox for Redis. InvalidationOutboxGrowing fires when it has not been empty for 15 minutes.",
                "none",
                query(f"max by (namespace) (quantaid_cache_invalidations_pending{sel(BACKEND)})", "pending"),
            ),
        ],
    )


def business() -> tuple[str, list]:
    def logins(result: str) -> str:
        return f"rate(quantaid_logins_total{sel(BACKEND, result)}{RATE})"

    def mfa(result: str) -> str:
        return f"rate(quantaid_mfa_verifications_total{sel(BACKEND, result)}{RATE})"
    return (
        "Business",
        [
            single(
                "Active sessions",
                "Sessions neither revoked nor expired (counted in PostgreSQL every 30 s; every backend reports the same number).",
                "short",
                query(f"max(quantaid_sessions_active{sel(BACKEND)})", "sessions"),
            ),
            graph(
                "Login success rate",
                "Share of finished password logins that succeeded (with or without MFA) among successes and wrong credentials; throttled attempts are not counted.",
                "percentunit",
                query(
                    f"sum({logins(SUCCESS)}) / sum({logins(SUCCESS_OR_FAILURE)})",
                    "success rate",
                ),
                span=5,
                max_val=1,
            ),
            graph(
                "MFA success rate",
                "Share of TOTP verifications that succeeded.",
                "percentunit",
                query(f"sum({mfa(SUCCESS)}) / sum({mfa(ANY_RESULT)})", "success rate"),
                span=5,
                max_val=1,
            ),
            single(
                "Login outcomes (1 h)",
                "Password logins in the last hour by result: success, mfa_required (password right, TOTP next), failure, throttled (429).",
                "short",
                query(f"sum by (result) (increase(quantaid_logins_total{sel(BACKEND)}[1h]))", "{{result}}"),
                span=10,
            ),
            graph(
                "Tokens issued by grant",
                "OAuth tokens issued per second by grant type.",
                "ops",
                query(f"sum by (grant_type) (rate(quantaid_oauth_tokens_issued_total{sel(BACKEND)}{RATE}))", "{{grant_type}}"),
                span=12,
            ),
            graph(
                "Password-hash rejections",
                "Logins and password changes per second refused with 503 because the password-hash queue was full: add CPU or replicas.",
                "reqps",
                query(f"sum by (pod) (rate(quantaid_password_hash_rejections_total{sel(BACKEND)}{RATE}))", "{{pod}}"),
                span=12,
            ),
        ],
    )


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("QuantaID")
        .uid("quantaid")
        .description("QuantaID sidecars: caching proxy and identity backend. Generated by deploy/grafana/dashboards/build.py.")
        .tags(["quantaid"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(VariableOption(selected=True, text="Prometheus", value="prometheus"))
        )
        .with_variable(
            dashboard.QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query('label_values(quantaid_http_requests_total{job=~"quantaid-proxy|quantaid-backend"}, namespace)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
        .with_variable(
            dashboard.QueryVariable("pod")
            .label("Pod")
            .datasource(DATASOURCE)
            .query('label_values(quantaid_http_requests_total{namespace=~"$namespace"}, pod)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    # Rows stay expanded: a row's panels follow it on the grid (Grafana keeps panels
    # nested in a row only when the row is collapsed).
    panel_id = 0
    for title, panels in (system_overview(), database(), cache(), business()):
        panel_id += 1
        board = board.with_row(dashboard.Row(title).collapsed(False).id(panel_id))
        for panel in panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return board


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def check(path: str) -> int:
    """Fails unless the committed JSON is exactly what this file builds, and parses back
    through the SDK's dashboard model unchanged."""
    committed = open(path).read()
    if committed != render():
        diff = difflib.unified_diff(committed.splitlines(), render().splitlines(), path, "build.py output", lineterm="")
        print("\n".join(list(diff)[:60]), file=sys.stderr)
        print(f"{path} is not what build.py generates: run\n  python3 deploy/grafana/dashboards/build.py > {path}", file=sys.stderr)
        return 1
    data = json.loads(committed)
    if json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder)) != data:
        print(f"{path} does not survive a round trip through the SDK's dashboard model", file=sys.stderr)
        return 1
    panels = sum(1 for p in data["panels"] if p["type"] != "row")
    print(f"{path}: generated by build.py, parses back ({panels} panels)")
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--check"]:
        return check(sys.argv[2])
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
