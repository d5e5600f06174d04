# shellcheck shell=bash # sourced by chaos/lib/common.sh
# --k8s mode: the same experiments and verdicts against a real cluster, where faults are
# injected with kubectl instead of signals to local processes (docs/chaos.md, "On
# Kubernetes"). It cannot run on the CI machine (no cluster); chaos/k8s/test.sh checks
# the kubectl commands it issues against a stand-in kubectl. Keep it thin. Sourced by
# chaos/lib/common.sh.
#
# Settings (environment):
#   CHAOS_K8S_NAMESPACE    namespace of the QuantaID release and its Redis (default quantaid)
#   CHAOS_K8S_TARGETS      comma-separated base URLs of the proxies as the load generator
#                          reaches them (e.g. `kubectl port-forward` to each pod, or the Service)
#   CHAOS_DATABASE_URL     PostgreSQL URL the load generator seeds users through
#   CHAOS_ADMIN_TOKEN      the backend's bootstrap admin token (creates the OAuth clients)
#   CHAOS_K8S_REDIS_POD    redis-kill: the (standalone) Redis pod to delete (default redis-0)
#   CHAOS_K8S_BACKEND_POD  redis-backend-cut, db-latency: a QuantaID pod with the Toxiproxy
#                          sidecar of chaos/k8s/ (container `toxiproxy`, proxies `postgres`, `redis`)
#   CHAOS_K8S_SENTINEL_PODS       sentinel-failover: comma-separated pods running redis-sentinel
#   CHAOS_K8S_SENTINEL_CONTAINER  their container running it (default: the pod's default container)
#   CHAOS_K8S_SENTINEL_PORT       its port (default 26379)
#   CHAOS_K8S_MASTER_NAME         the Sentinel master name (default mymaster, the chart's default)

K8S_NS=${CHAOS_K8S_NAMESPACE:-quantaid}
# The sidecar's API port (chaos/k8s/toxiproxy-sidecar.yaml); it listens on the pod's loopback.
K8S_TOXIPROXY_PORT=8474

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

# chaos_k8s_redis_cli [-c CONTAINER] POD ARGS...: redis-cli inside the pod, authenticated
# with the pod's own $REDIS_PASSWORD when it has one (the password never leaves the pod).
chaos_k8s_redis_cli() {
    local container=()
    if [ "$1" = -c ]; then
        container=(-c "$2")
        shift 2
    fi
    local pod=$1
    shift
    # shellcheck disable=SC2016 # $REDIS_PASSWORD is the pod's, expanded by the shell inside it
    kube exec "$pod" "${container[@]}" -- sh -c \
        'if [ -n "${REDIS_PASSWORD:-}" ]; then export REDISCLI_AUTH="$REDIS_PASSWORD"; fi; exec redis-cli --no-auth-warning "$@"' \
        redis-cli "$@"
}

# chaos_k8s_sentinel_master [SKIP_POD]: "HOST PORT" of the master as the first Sentinel of
# CHAOS_K8S_SENTINEL_PODS that answers names it (SKIP_POD, e.g. one just deleted, is not
# asked); fails when none answers.
chaos_k8s_sentinel_master() {
    local pods=${CHAOS_K8S_SENTINEL_PODS:?set CHAOS_K8S_SENTINEL_PODS to the pods running redis-sentinel}
    local pod answer container=()
    [ -n "${CHAOS_K8S_SENTINEL_CONTAINER:-}" ] && container=(-c "$CHAOS_K8S_SENTINEL_CONTAINER")
    for pod in ${pods//,/ }; do
        [ "$pod" = "${1:-}" ] && continue
        answer=$(chaos_k8s_redis_cli "${container[@]}" "$pod" -p "${CHAOS_K8S_SENTINEL_PORT:-26379}" \
            SENTINEL get-master-addr-by-name "${CHAOS_K8S_MASTER_NAME:-mymaster}" 2>/dev/null | paste -sd ' ') || continue
        # Two lines, host and port; anything else (an error, nil) is no answer.
        if [[ $answer =~ ^[^[:space:]]+\ [0-9]+$ ]]; then
            echo "$answer"
            return 0
        fi
    done
    return 1
}

# chaos_k8s_pod_of HOST: the pod in the namespace whose IP is HOST, or, when Sentinel
# announces hostnames (redis-1.redis-headless...), whose name is HOST's first label.
chaos_k8s_pod_of() {
    kube get pods -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.podIP}{"\n"}{end}' \
        | awk -v h="$1" 'BEGIN { split(h, l, "."); first = l[1] }
            $2 == h { print $1; found = 1; exit }
            $1 == first { byname = $1 }
            END { if (!found && byname != "") print byname; exit !(found || byname != "") }'
}

# chaos_k8s_toxiproxy POD: points TOXIPROXY_URL at POD's Toxiproxy sidecar through a
# `kubectl port-forward` (the API listens on the pod's loopback only), so chaos_toxi_add,
# chaos_toxi_remove, chaos_toxi_cut and chaos_toxi_restore act on it as on a local one.
# The port-forward is a spawned process: cleanup ends it.
chaos_k8s_toxiproxy() {
    local pod=$1 port
    port=$(chaos_port)
    chaos_spawn toxiproxy-port-forward kubectl --namespace "$K8S_NS" port-forward "pod/$pod" \
        "$port:$K8S_TOXIPROXY_PORT"
    TOXIPROXY_URL=http://127.0.0.1:$port
    chaos_wait_http "$TOXIPROXY_URL/version" 20
}
