#!/usr/bin/env bash
# Installs every tool deploy/k8s/test.sh uses, from the package registries, into a cache outside
# the clone (QUANTAID_CACHE, default /var/tmp/quantaid-cache). Each tool is built once; reruns
# find it in the cache and skip it. Usage: tools.sh [all|static|cluster|<tool>...]
set -euo pipefail

CACHE="${QUANTAID_CACHE:-/var/tmp/quantaid-cache}"
GOBIN_DIR="$CACHE/go-bin"
K8S_VERSION=v1.37.2
K8S_STAGING_VERSION=v0.37.2
HELM_VERSION=v3.21.4
HELM4_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
KUBE_SCORE_VERSION=v1.20.0
CONFTEST_VERSION=v0.71.1
UNITTEST_VERSION=v1.1.2
KWOK_VERSION=v0.8.0
PROM_OPERATOR_VERSION=v0.85.0
K8S_VALIDATE_VERSION=1.37.0    # PyPI kubernetes-validate: the schemas kubeconform reads
SCHEMA_K8S_VERSION=v1.37.0

mkdir -p "$CACHE" "$GOBIN_DIR"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
GO="nice -n 10 go"
log() { printf '[tools] %s\n' "$*" >&2; }

# go_tool NAME MODULE/PKG VERSION [LDFLAGS]: go install into the cache, keyed by version and flags.
go_tool() {
  local name=$1 pkg=$2 version=$3 ldflags=${4:-} stamp="$GOBIN_DIR/.$1.version"
  if [[ -x "$GOBIN_DIR/$name" && "$(cat "$stamp" 2>/dev/null)" == "$version $ldflags" ]]; then return; fi
  log "building $name $version (go install $pkg@$version)"
  GOBIN="$GOBIN_DIR" $GO install -ldflags "$ldflags" "$pkg@$version"
  echo "$version $ldflags" >"$stamp"
}

# main_module_build NAME MODULE VERSION OUTDIR PKG...: for modules whose go.mod uses replace
# directives, which `go install mod@version` refuses: build from a copy of the module source.
# An optional EDIT function rewrites go.mod first.
main_module_build() {
  local name=$1 module=$2 version=$3 out=$4 edit=$5 ldflags=$6; shift 6
  local src work
  src=$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  work=$(mktemp -d "$CACHE/.build-$name.XXXXXX")
  cp -a "$src/." "$work/" && chmod -R u+w "$work"
  ( cd "$work"
    [[ -n "$edit" ]] && "$edit"
    $GO mod tidy >/dev/null 2>&1 || GOFLAGS=-mod=mod $GO mod download
    mkdir -p "$out"
    GOFLAGS="$GOFLAGS -mod=mod" $GO build -trimpath -ldflags "$ldflags" -o "$out/" "$@" )
  rm -rf "$work"
}

# Helm's release builds stamp its version and the Kubernetes version `helm template` assumes
# (its client-go minor + 1.x: 1.36 for v3.21); `go install` alone would leave v1.20.
helm_ldflags() { # helm_ldflags MODULE VERSION K8S_MINOR
  local m=$1 f="-X $1/internal/version.version=$2"
  for p in pkg/lint/rules pkg/chartutil; do f+=" -X $m/$p.k8sVersionMajor=1 -X $m/$p.k8sVersionMinor=$3"; done
  echo "$f"
}
helm() { go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$(helm_ldflags helm.sh/helm/v3 "$HELM_VERSION" 36)"; }
helm4() {
  # Helm 4 installs under its own name so both can be on PATH.
  local dir="$CACHE/helm4-$HELM4_VERSION"
  [[ -x "$dir/helm" ]] && return
  log "building helm $HELM4_VERSION"
  mkdir -p "$dir"; GOBIN="$dir" $GO install -ldflags "-X helm.sh/helm/v4/internal/version.version=$HELM4_VERSION" "helm.sh/helm/v4/cmd/helm@$HELM4_VERSION"
}
kubeconform() { go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"; }
kube_score() { go_tool kube-score github.com/zegl/kube-score/cmd/kube-score "$KUBE_SCORE_VERSION"; }
conftest() { go_tool conftest github.com/open-policy-agent/conftest "$CONFTEST_VERSION"; }

unittest() {
  # helm-unittest's go.mod carries a replace directive: build it as the main module.
  local dir="$CACHE/helm-unittest-$UNITTEST_VERSION"
  [[ -x "$dir/untt" ]] && return
  log "building helm-unittest $UNITTEST_VERSION"
  main_module_build helm-unittest github.com/helm-unittest/helm-unittest "$UNITTEST_VERSION" "$dir" "" "" ./cmd/helm-unittest
  mv "$dir/helm-unittest" "$dir/untt"
}

k8s_edit_gomod() {
  # Drop the ./staging replaces and require the published k8s.io/* modules of the same release.
  python3 - "$K8S_STAGING_VERSION" <<'PY'
import re, sys
ver = sys.argv[1]
text = open("go.mod").read()
text = re.sub(r"^\s*(replace\s+)?k8s\.io/\S+\s+=>\s+\./staging/\S+\s*$\n", "", text, flags=re.M)
text = re.sub(r"^replace \(\s*\)\s*$\n?", "", text, flags=re.M)
text = re.sub(r"^(\s*k8s\.io/[\w.-]+(?:/[\w.-]+)*) v0\.0\.0\s*$", r"\1 " + ver, text, flags=re.M)
open("go.mod", "w").write(text)
PY
  rm -f go.work go.work.sum
}
kubernetes() {
  local dir="$CACHE/k8s-$K8S_VERSION"
  local b missing=0 minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do [[ -x "$dir/$b" ]] || missing=1; done
  ((missing)) || return 0
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION (slow)"
  # Stamp the release version, as the project's own build does: clients such as Helm check it.
  local v ldflags=""
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  done
  main_module_build kubernetes k8s.io/kubernetes "$K8S_VERSION" "$dir" k8s_edit_gomod "$ldflags" \
    ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler ./cmd/kubectl
}

kwok() {
  local dir="$CACHE/kwok-$KWOK_VERSION" src
  if [[ ! -x "$dir/kwok" ]]; then
    log "building kwok $KWOK_VERSION"
    mkdir -p "$dir"; GOBIN="$dir" $GO install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  fi
  if [[ ! -d "$dir/stage" ]]; then
    # kwok's Stage files (node and pod lifecycles) ship in its module source.
    src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    cp -r "$src/kustomize/stage" "$dir/stage"; chmod -R u+w "$dir/stage"
  fi
}

etcd() {
  command -v etcd >/dev/null && return
  log "installing Debian etcd-server"
  (apt-get install -y -q etcd-server >/dev/null 2>&1) || { apt-get update -q >/dev/null; apt-get install -y -q etcd-server >/dev/null; }
  # Debian's package starts a system etcd on the default ports; the tests run their own.
  (systemctl disable --now etcd 2>/dev/null || service etcd stop 2>/dev/null || true) >/dev/null
}

crds() {
  # ServiceMonitor, PodMonitor and PrometheusRule CRDs from the prometheus-operator module source.
  local dir="$CACHE/monitoring-crds-$PROM_OPERATOR_VERSION" src f
  [[ -f "$dir/servicemonitors.yaml" ]] && return
  src=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$dir"
  for f in servicemonitors podmonitors prometheusrules; do
    cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_$f.yaml" "$dir/$f.yaml"
  done
  chmod -R u+w "$dir"
}

schemas() {
  crds
  python3 -c "import yaml" 2>/dev/null || python3 -m pip install -q pyyaml
  python3 "$(dirname "${BASH_SOURCE[0]}")/schemas.py" "$CACHE" "$K8S_VALIDATE_VERSION" "$SCHEMA_K8S_VERSION" "$CACHE/monitoring-crds-$PROM_OPERATOR_VERSION" >/dev/null
}

static() { helm; helm4; kubeconform; kube_score; conftest; unittest; crds; schemas; }
cluster() { etcd; kubernetes; kwok; crds; }
all() { static; cluster; }

[[ $# -eq 0 ]] && set -- all
for t in "$@"; do "${t//-/_}"; done
