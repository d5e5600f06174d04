#!/usr/bin/env python3
"""Offline JSON schemas for kubeconform.

Kubernetes' own schemas come from PyPI's kubernetes-validate wheel (its "-local-strict" set),
whose $refs point at "/api/_definitions.json"; they are rewritten to the local file so
kubeconform never goes to the network. The monitoring CRDs' openAPIV3Schema become schemas
named the way kubeconform's default template looks them up (<kind>-<group>-<version>.json).

Usage: schemas.py CACHE_DIR K8S_VALIDATE_VERSION SCHEMA_K8S_VERSION CRD_DIR
Prints the schema directory.
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

import yaml  # PyYAML


def strict(node):
    """Refuses unknown fields, as the Kubernetes schemas' strict set does, except where the
    CRD itself keeps unknown fields."""
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
    elif isinstance(node, list):
        node = [strict(v) for v in node]
    return node


def main() -> None:
    cache, pkg_version, k8s_version, crd_dir = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], pathlib.Path(sys.argv[4])
    out = cache / f"k8s-schemas-{k8s_version}"
    stamp = out / ".complete"
    if stamp.exists():
        print(out)
        return
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        f"kubernetes-validate=={pkg_version}"], check=True)
        wheel = next(pathlib.Path(tmp).glob("kubernetes_validate-*.whl"))
        prefix = f"kubernetes_validate/kubernetes-json-schema/{k8s_version}-local-strict/"
        definitions = (out / "_definitions.json").resolve().as_uri()
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.startswith(prefix) and n.endswith(".json")]
            if not names:
                sys.exit(f"kubernetes-validate {pkg_version} has no {k8s_version}-local-strict schemas")
            for name in names:
                text = z.read(name).decode()
                text = text.replace('"/api/_definitions.json#', f'"{definitions}#')
                (out / name[len(prefix):]).write_text(text)
    for crd_file in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.safe_load(crd_file.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            name = f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json"
            (out / name).write_text(json.dumps(schema))
    stamp.write_text("ok\n")
    print(out)


if __name__ == "__main__":
    main()
