#!/usr/bin/env bash
# Checks the --k8s forms of the chaos experiments without a cluster (docs/chaos.md, "On
# Kubernetes"): what it can check here, and no more.
#
#   chaos/k8s/test.sh
#
# 1. The Toxiproxy sidecar overlay (chaos/k8s/): the chart rendered with Helm, patched with
#    `kubectl kustomize`, valid against the Kubernetes schemas (kubeconform -strict), and
#    wired as the experiments expect (tests/check_overlay.py).
# 2. Each experiment's --k8s form, run by chaos/run.sh --k8s --quick with a stand-in
#    `kubectl` (and `redis-cli` behind its `exec`) first on PATH that records every call
#    and answers like a cluster with a Sentinel-managed Redis, and a stand-in load
#    generator that writes numbers meeting every goal. `kubectl port-forward` to the
#    sidecar starts a real Toxiproxy 2.5.0 with chaos/k8s/toxiproxy.json, so the
#    experiments' API calls are Toxiproxy's own answers. Phases do not wait (the
#    experiments' whole-second sleeps are recorded with Toxiproxy's state instead).
#    Checked: the pod deleted (the one Sentinel names as master, not redis-0), the toxics
#    and cuts in force during each phase, and that the verdict fails when Sentinel never
#    names another master.
#
# Installs what is missing (jq, curl, Toxiproxy, Helm, kubectl, kubeconform and the
# schemas through deploy/k8s/tools.sh, cached under /var/tmp/quantaid-cache); no cargo
# build, no cluster, no Docker. About 20 s once the tools are cached. Exit 0 when every
# check passed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CACHE=${QUANTAID_CACHE:-/var/tmp/quantaid-cache}
started=$SECONDS

for tool in jq curl python3; do
    command -v "$tool" >/dev/null && continue
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq curl python3 python3-pip >/dev/null
    break
done
# As deploy/k8s/tools.sh does: the python3 on PATH may not be Debian's.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
TOXIPROXY_BIN=$(bash -c 'set -euo pipefail; CHAOS_NAME=k8s-test; . chaos/lib/common.sh; chaos_toxiproxy_install >&2; echo "$TOXIPROXY_BIN"')

work=$(mktemp -d /tmp/quantaid-chaos-k8s-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
ok() { passed=$((passed + 1)); printf 'ok     %s\n' "$1"; }
not_ok() {
    failed=$((failed + 1))
    printf 'FAILED %s\n' "$1"
    if [ -n "${2:-}" ] && [ -s "$2" ]; then sed 's/^/    | /' "$2" | tail -n 40; fi
}

# ------------------------------------------------------------------ 1. the overlay

"$ROOT/deploy/k8s/tools.sh" helm kubernetes kubeconform schemas >"$work/tools.log" 2>&1 \
    || { not_ok "deploy/k8s/tools.sh installs helm, kubectl, kubeconform and the schemas" "$work/tools.log"; exit 1; }
overlay=$work/overlay
cp -r chaos/k8s "$overlay"
# The chart's default values: chaos/k8s/toxiproxy.json names their database and Redis.
if "$CACHE/go-bin/helm" template quantaid deploy/k8s/quantaid -n quantaid --set ingress.host=id.example.com \
    >"$overlay/quantaid.yaml" 2>"$work/helm.log"; then
    ok "helm template of the chart (default values)"
else
    not_ok "helm template of the chart (default values)" "$work/helm.log"
fi
if "$CACHE/k8s-v1.37.2/kubectl" kustomize "$overlay" >"$work/patched.yaml" 2>"$work/kustomize.log"; then
    ok "kubectl kustomize chaos/k8s over the rendered chart"
else
    not_ok "kubectl kustomize chaos/k8s over the rendered chart" "$work/kustomize.log"
fi
# The Prometheus Operator's kinds have no schema here (deploy/k8s/test.sh checks them).
if "$CACHE/go-bin/kubeconform" -strict -summary -skip ServiceMonitor,PodMonitor,PrometheusRule \
    -schema-location "$CACHE/k8s-schemas-v1.37.0/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$work/patched.yaml" >"$work/kubeconform.log" 2>&1; then
    ok "kubeconform -strict of the patched release"
else
    not_ok "kubeconform -strict of the patched release" "$work/kubeconform.log"
fi
if python3 chaos/k8s/tests/check_overlay.py "$overlay/quantaid.yaml" "$work/patched.yaml" chaos/k8s/toxiproxy.json \
    identity-backend/src/config.rs runtime/src/settings.rs >"$work/overlay.log" 2>&1; then
    ok "the sidecar comes before the backend, which alone is pointed at its listeners"
else
    not_ok "the sidecar comes before the backend, which alone is pointed at its listeners" "$work/overlay.log"
fi

# ------------------------------------------------------------------ 2. the experiments

bin=$work/bin state=$work/state
mkdir -p "$bin"
export FAKE_LOG=$work/calls.log FAKE_STATE=$state FAKE_ROOT=$ROOT TOXIPROXY_BIN
cp chaos/k8s/tests/fake-kubectl "$bin/kubectl"
cp chaos/k8s/tests/fake-redis-cli "$bin/redis-cli"
cp chaos/k8s/tests/fake-loadtest "$bin/quantaid-loadtest"
chmod 755 "$bin"/*

# The experiments' phases last whole seconds; here they do not wait, and each is recorded
# with the sidecar's state (when a port-forward points TOXIPROXY_URL at it). Polls
# (fractions of a second) wait, and record the state when it changed. Exported so that
# the experiment's shell, started by chaos/run.sh, has them.
toxi_state() {
    [ -n "${TOXIPROXY_URL:-}" ] || return 0
    curl -fsS --max-time 2 "$TOXIPROXY_URL/proxies" | jq -r '[.[] | "\(.name) \(if .enabled then "up" else "down" end) [\([.toxics[] | "\(.name):\(.type)=\(.attributes.latency)"] | join(","))]"] | sort | join("; ")'
}
sleep() {
    local now
    now=$(toxi_state 2>/dev/null || true)
    case $1 in
    *.*)
        if [ -n "$now" ] && [ "$now" != "$(cat "$FAKE_STATE/toxi.last" 2>/dev/null)" ]; then
            printf 'state | %s\n' "$now" >>"$FAKE_LOG"
        fi
        command sleep "$1"
        ;;
    *) printf 'sleep %s | %s\n' "$1" "$now" >>"$FAKE_LOG" ;;
    esac
    printf '%s' "$now" >"$FAKE_STATE/toxi.last"
}
export -f toxi_state sleep

# run_k8s NAME [VAR=VALUE...]: chaos/run.sh NAME --k8s --quick in a fresh cluster state
# (Redis master redis-1 unless FAKE_MASTER says otherwise); its exit code in $rc, its
# output in $work/NAME.out, the calls in $FAKE_LOG.
run_k8s() {
    local name=$1
    shift
    rm -rf "$state" "$FAKE_LOG" "$work/reports"
    mkdir -p "$state"
    printf '%s\n' "redis-0 10.1.0.10" "redis-1 10.1.0.11" "redis-2 10.1.0.12" \
        "quantaid-7d9f-abcde 10.1.1.20" "quantaid-7d9f-fghij 10.1.1.21" "pg-1 10.1.2.30" >"$state/pods"
    echo "${FAKE_MASTER:-redis-1}" >"$state/master"
    rc=0
    env PATH="$bin:$PATH" CHAOS_BIN_DIR="$bin" CHAOS_K8S_NAMESPACE=quantaid \
        CHAOS_K8S_TARGETS=http://127.0.0.1:1,http://127.0.0.1:2 CHAOS_DATABASE_URL=postgresql://seed@127.0.0.1:1/quantaid \
        CHAOS_ADMIN_TOKEN=test-admin-token CHAOS_K8S_BACKEND_POD=quantaid-7d9f-abcde \
        CHAOS_K8S_SENTINEL_PODS=redis-0,redis-1,redis-2 CHAOS_K8S_PG_PRIMARY_POD=pg-1 "$@" \
        timeout 60 chaos/run.sh "$name" --k8s --quick --out "$work/reports" >"$work/$name.out" 2>&1 || rc=$?
    cat "$work/$name.out" "$FAKE_LOG" >"$work/$name.all" 2>/dev/null || true
}

# expect DESCRIPTION CONDITION...: one check of the last run.
expect() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what" "$work/$current.all"; fi
}
logged() { grep -qF -- "$1" "$FAKE_LOG"; }
logged_re() { grep -qE -- "$1" "$FAKE_LOG"; }
verdict_has() { grep -qF -- "$1" "$work/reports/verdict.md"; }

current=sentinel-failover
run_k8s sentinel-failover
expect "sentinel-failover --k8s passes when Sentinel names a new master" [ "$rc" = 0 ]
expect "sentinel-failover asks a Sentinel for the master (redis-cli through kubectl exec, the pod's password)" \
    logged "redis-cli[redis-0] auth=set --no-auth-warning -p 26379 SENTINEL get-master-addr-by-name mymaster"
expect "sentinel-failover deletes redis-1, the pod Sentinel names as master, at once" \
    logged "kubectl --namespace quantaid delete pod redis-1 --grace-period=0 --force --wait=false"
expect "sentinel-failover deletes no other pod" [ "$(grep -c ' delete pod ' "$FAKE_LOG")" = 1 ]
expect "sentinel-failover does not ask the deleted pod's Sentinel afterwards" \
    bash -c "! sed -n '/delete pod redis-1/,\$p' '$FAKE_LOG' | grep -qE 'exec redis-1 .*SENTINEL'"
expect "sentinel-failover's verdict holds the new master within 5 s" \
    verdict_has "| PASS | a Sentinel named a master in another pod (s after deleting redis-1) |"

FAKE_MASTER=redis-2 run_k8s sentinel-failover CHAOS_K8S_SENTINEL_CONTAINER=sentinel CHAOS_K8S_MASTER_NAME=quantaid
expect "with redis-2 as master and a sentinel container: deletes redis-2" \
    logged "kubectl --namespace quantaid delete pod redis-2 --grace-period=0 --force --wait=false"
expect "with a sentinel container: exec -c sentinel, master name quantaid" \
    logged "kubectl --namespace quantaid exec redis-0 -c sentinel -- sh -c"

current=sentinel-failover-stuck
run_k8s sentinel-failover FAKE_NO_FAILOVER=1
cp "$work/sentinel-failover.all" "$work/$current.all"
expect "sentinel-failover --k8s fails when no Sentinel names another master" [ "$rc" = 1 ]
expect "... and its verdict says which goal was missed" \
    verdict_has "| FAIL | a Sentinel named a master in another pod (s after deleting redis-1) | (not measured) <= 5 |"

current=redis-backend-cut
run_k8s redis-backend-cut
expect "redis-backend-cut --k8s passes" [ "$rc" = 0 ]
expect "redis-backend-cut reaches the sidecar of CHAOS_K8S_BACKEND_POD through a port-forward" \
    logged_re "kubectl --namespace quantaid port-forward pod/quantaid-7d9f-abcde [0-9]+:8474"
expect "redis-backend-cut: the link is up before the cut" logged "sleep 10 | postgres up []; redis up []"
expect "redis-backend-cut: the sidecar's redis proxy is down during the cut, postgres untouched" \
    logged "sleep 10 | postgres up []; redis down []"
expect "redis-backend-cut: the redis proxy is up again after the cut" \
    bash -c "sed -n '/redis down/,\$p' '$FAKE_LOG' | grep -qF 'state | postgres up []; redis up []'"

current=db-latency
run_k8s db-latency
expect "db-latency --k8s passes" [ "$rc" = 0 ]
expect "db-latency: no toxic before the fault" logged "sleep 10 | postgres up []; redis up []"
expect "db-latency: +500 ms on the sidecar's postgres proxy during the fault" \
    logged "sleep 15 | postgres up [slow:latency=500]; redis up []"
expect "db-latency: the toxic is removed before the recovery is measured" \
    logged "sleep 4 | postgres up []; redis up []"

current=redis-kill
run_k8s redis-kill
expect "redis-kill --k8s passes" [ "$rc" = 0 ]
expect "redis-kill deletes CHAOS_K8S_REDIS_POD (default redis-0) and waits for its return" \
    bash -c "grep -qF 'delete pod redis-0 --grace-period=0 --force' '$FAKE_LOG' && grep -qF 'wait --for=condition=Ready pod -l statefulset.kubernetes.io/pod-name=redis-0' '$FAKE_LOG'"

current=pod-kill
run_k8s pod-kill
expect "pod-kill --k8s passes" [ "$rc" = 0 ]
expect "pod-kill deletes one QuantaID pod and waits for the selector's pods to be ready" \
    bash -c "grep -qF 'delete pod quantaid-7d9f-abcde --grace-period=0 --force' '$FAKE_LOG' && grep -qF 'wait --for=condition=Ready pod -l app.kubernetes.io/name=quantaid' '$FAKE_LOG'"

current=db-primary-kill
run_k8s db-primary-kill
expect "db-primary-kill --k8s passes" [ "$rc" = 0 ]
expect "db-primary-kill deletes CHAOS_K8S_PG_PRIMARY_POD" \
    logged "kubectl --namespace quantaid delete pod pg-1 --grace-period=0 --force --wait=false"

printf 'chaos/k8s/test.sh: %d passed, %d failed in %d s\n' "$passed" "$failed" $((SECONDS - started))
((failed == 0))
