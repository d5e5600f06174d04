"""Checks the Toxiproxy sidecar overlay of chaos/k8s/ as chaos/k8s/test.sh renders it.

Usage: check_overlay.py RENDERED_CHART PATCHED TOXIPROXY_JSON CONFIG_RS

The patched Deployment must run `toxiproxy` (pinned image) as a native sidecar before
`backend`, mount the generated ConfigMap, and point the backend alone (not the proxy) at
the listeners of toxiproxy.json, whose upstreams are the chart's own database and Redis
addresses; the variables must be the backend's (identity-backend/src/config.rs, runtime/src/settings.rs).
"""
import json
import re
import sys

import yaml


def deployment(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    return [d for d in docs if d["kind"] == "Deployment"][0], docs


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def main(rendered, patched, toxi_json, *config_files):
    errors = []

    def need(cond, what):
        if not cond:
            errors.append(what)

    _, chart_docs = deployment(rendered)
    config = [d for d in chart_docs if d["kind"] == "ConfigMap" and "QUANTAID_DB_HOST" in d.get("data", {})][0]["data"]
    dep, docs = deployment(patched)
    spec = dep["spec"]["template"]["spec"]
    inits = spec["initContainers"]
    names = [c["name"] for c in inits]
    need(names[:2] == ["toxiproxy", "backend"], f"init containers {names}, want toxiproxy then backend")
    toxi = inits[0]
    need(re.fullmatch(r"ghcr\.io/shopify/toxiproxy:\d+\.\d+\.\d+", toxi["image"]) is not None,
         f"image {toxi['image']} is not a pinned ghcr.io/shopify/toxiproxy tag")
    need(toxi.get("restartPolicy") == "Always", "toxiproxy is not a native sidecar (restartPolicy Always)")
    need("startupProbe" in toxi, "toxiproxy has no startup probe: the backend could start before its listeners")
    need("-host=127.0.0.1" in toxi.get("args", []), "the Toxiproxy API is not on loopback only")

    proxies = {p["name"]: p for p in json.load(open(toxi_json))}
    need(set(proxies) == {"postgres", "redis"}, f"proxies {sorted(proxies)}, want postgres and redis")
    pg_listen = proxies["postgres"]["listen"]
    redis_listen = proxies["redis"]["listen"]
    need(pg_listen.startswith("127.0.0.1:") and redis_listen.startswith("127.0.0.1:"), "listeners not on loopback")
    need(proxies["postgres"]["upstream"] == f"{config['QUANTAID_DB_HOST']}:{config['QUANTAID_DB_PORT']}",
         "the postgres upstream is not the chart's database.host:database.port")
    need(proxies["redis"]["upstream"] == config["QUANTAID_REDIS_HOST"], "the redis upstream is not the chart's redis.host")

    consts = set()
    for config_file in config_files:
        consts |= set(re.findall(r'pub const \w+: &str = "([A-Z_]+)";', open(config_file).read()))
    backend = env_of(inits[1])
    want = {"QUANTAID_DB_HOST": "127.0.0.1", "QUANTAID_DB_PORT": pg_listen.split(":")[1], "QUANTAID_REDIS_HOST": redis_listen}
    for name, value in want.items():
        need(name in consts, f"{name} is not a variable the backend reads")
        need(backend.get(name) == value, f"backend {name}={backend.get(name)!r}, want {value!r}")
    for c in spec["containers"]:
        overridden = set(want) & set(env_of(c))
        need(not overridden, f"container {c['name']} also overrides {sorted(overridden)}: only the backend may lose Redis")

    mounts = {m["name"]: m["mountPath"] for m in toxi.get("volumeMounts", [])}
    need(mounts.get("toxiproxy-config") == "/etc/toxiproxy", "the config volume is not mounted at /etc/toxiproxy")
    vol = [v for v in spec["volumes"] if v["name"] == "toxiproxy-config"]
    cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    need(bool(vol) and vol[0]["configMap"]["name"] in cms, "the config volume names no ConfigMap of the overlay")
    if vol and vol[0]["configMap"]["name"] in cms:
        data = cms[vol[0]["configMap"]["name"]]["data"]
        need(json.loads(data.get("toxiproxy.json", "[]")) == json.load(open(toxi_json)),
             "the ConfigMap does not hold toxiproxy.json")

    for e in errors:
        print("overlay:", e)
    print("overlay: ok" if not errors else f"overlay: {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
