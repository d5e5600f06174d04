#!/usr/bin/env python3
"""Validates a compose file against the Compose specification's JSON schema (the one
compose-go ships, fetched through the Go module proxy and cached), and checks what the
QuantaID stack relies on: healthchecks on the datastores, secrets from files, the backend
in the proxy's network namespace on loopback, Redis with noeviction.

Usage: compose_check.py FILE
"""
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import jsonschema
import yaml

COMPOSE_GO = "github.com/compose-spec/compose-go/v2@v2.17.0"


def schema() -> dict:
    cache = pathlib.Path(os.environ.get("QUANTAID_CACHE", "/var/tmp/quantaid-cache")) / "compose-spec-v2.17.0.json"
    if not cache.exists():
        # Only the module zip is needed, so the module's own Go version does not matter.
        info = json.loads(subprocess.run(["go", "mod", "download", "-json", COMPOSE_GO],
                                         capture_output=True, text=True).stdout)
        with zipfile.ZipFile(info["Zip"]) as z:
            name = next(n for n in z.namelist() if n.endswith("/schema/compose-spec.json"))
            cache.write_bytes(z.read(name))
    return json.loads(cache.read_text())


def main() -> None:
    path = pathlib.Path(sys.argv[1])
    doc = yaml.safe_load(path.read_text())
    spec = schema()
    errors = sorted(jsonschema.validators.validator_for(spec)(spec).iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        print(f"{'/'.join(map(str, e.path))}: {e.message}")
    s = doc["services"]
    problems = []
    for name in ("postgres", "redis", "prometheus"):
        if "healthcheck" not in s[name]:
            problems.append(f"{name} has no healthcheck")
    if s["backend"].get("network_mode") != "service:proxy":
        problems.append("the backend must share the proxy's network namespace")
    if s["backend"]["environment"].get("QUANTAID_LISTEN_ADDR") != "127.0.0.1:8081":
        problems.append("the backend must listen on loopback")
    if "noeviction" not in " ".join(s["redis"]["command"]):
        problems.append("redis must run with maxmemory-policy noeviction")
    for svc in s.values():
        for key, value in (svc.get("environment") or {}).items():
            if any(w in key for w in ("PASSWORD", "TOKEN")) and not key.endswith("_FILE"):
                problems.append(f"{key} is set inline; secrets come from files")
    for f in (doc.get("secrets") or {}).values():
        if "file" not in f:
            problems.append("every secret must come from a file")
    print("\n".join(problems))
    sys.exit(1 if errors or problems else 0)


if __name__ == "__main__":
    main()
