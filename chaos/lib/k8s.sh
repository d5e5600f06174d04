# shellcheck shell=bash # sourced by chaos/lib/common.sh
# --k8s mode: the same experiments and verdicts against a real cluster, where faults are
# injected with kubectl instead of signals to local processes (docs/chaos.md, "On
# Kubernetes"). It cannot run on the CI machine (no cluster); keep it thin. Sourced by
# chaos/lib/common.sh.
#
# Settings (environment):
#   CHAOS_K8S_NAMESPACE    namespace of the QuantaID release (default quantaid)
#   CHAOS_K8S_TARGETS      comma-separated base URLs of the proxies as the load generator
#                          reaches them (e.g. `kubectl port-forward` to each pod, or the Service)
#   CHAOS_DATABASE_URL     PostgreSQL URL the load generator seeds users through
#   CHAOS_ADMIN_TOKEN      the backend's bootstrap admin token (creates the OAuth clients)
#   CHAOS_K8S_REDIS_POD    the Redis (primary) pod, for redis-cli and kills (default redis-0)

K8S_NS=${CHAOS_K8S_NAMESPACE:-quantaid}

kube() { kubectl --namespace "$K8S_NS" "$@"; }

# chaos_k8s_setup: checks kubectl and the settings; sets CHAOS_TARGETS and the admin token.
# shellcheck disable=SC2034 # the experiments and chaos/lib/load.sh read CHAOS_TARGETS and ADMIN_TOKEN
chaos_k8s_setup() {
    command -v kubectl >/dev/null || die "--k8s needs kubectl on PATH, pointed at the cluster"
    kube get pods >/dev/null || die "kubectl cannot list pods in namespace $K8S_NS"
    CHAOS_TARGETS=${CHAOS_K8S_TARGETS:?set CHAOS_K8S_TARGETS to the proxies\' URLs}
    : "${CHAOS_DATABASE_URL:?set CHAOS_DATABASE_URL for seeding}"
    ADMIN_TOKEN=${CHAOS_ADMIN_TOKEN:?set CHAOS_ADMIN_TOKEN}
}

# chaos_k8s_kill_pod SELECTOR_OR_NAME: deletes at once, no grace (a crash, as SIGKILL).
chaos_k8s_kill_pod() {
    if [[ $1 == *=* ]]; then
        kube delete pod -l "$1" --grace-period=0 --force --wait=false
    else
        kube delete pod "$1" --grace-period=0 --force --wait=false
    fi
}

# chaos_k8s_wait_ready SELECTOR [SECS]: until every matching pod is Ready.
chaos_k8s_wait_ready() {
    kube wait --for=condition=Ready pod -l "$1" --timeout="${2:-120}s" >/dev/null
}

# chaos_k8s_redis_cli POD ARGS...: redis-cli inside the pod (its password from the pod's env).
chaos_k8s_redis_cli() {
    local pod=$1
    shift
    # shellcheck disable=SC2016 # $REDIS_PASSWORD is the pod's, expanded by the shell inside it
    kube exec "$pod" -- sh -c 'REDISCLI_AUTH=$REDIS_PASSWORD exec redis-cli --no-auth-warning "$@"' redis-cli "$@"
}

# chaos_k8s_toxi POD ARGS...: toxiproxy-cli in the pod's Toxiproxy sidecar (container `toxiproxy`).
chaos_k8s_toxi() {
    local pod=$1
    shift
    kube exec "$pod" -c toxiproxy -- /toxiproxy-cli "$@"
}
