# shellcheck shell=bash # sourced by chaos/run.sh
# pod-kill: two pods, each a sidecar pair (caching proxy + identity backend on its own
# ports; both pods share PostgreSQL and Redis), behind HAProxy (chaos/haproxy/quantaid.cfg:
# health checks on /ready, retries on another pod for requests safe to replay). SIGKILL one
# pod's proxy and backend together in the middle of the load, restart them after a while.
# Goals (docs/chaos.md): < 0.1% failed requests (aim: 0); the surviving pod carries the
# whole load meanwhile; the restarted pod rejoins once ready and takes its share again;
# no revoked credential answered "active".

# shellcheck disable=SC2034 # the variables below are read by chaos/lib and chaos/run.sh
EXPERIMENT_SUMMARY="SIGKILL one of two pods (proxy + backend) behind HAProxy under load, restart it: < 0.1% failed requests (aim 0), the survivor carries the load, the restarted pod rejoins once ready."

pod_kill_timings() {
    # before, down, after (seconds), the offered rate.
    if [ "$CHAOS_QUICK" = 1 ]; then echo "10 8 14 150"; else echo "30 20 40 300"; fi
}

# pod_start NAME: the pod's backend, then its proxy (each waits for /ready), on the ports
# chosen once in pod_ports.
pod_start() {
    local name=$1 api metrics port proxy_metrics
    read -r api metrics port proxy_metrics <"$CHAOS_WORK/$name.ports"
    chaos_backend_start "$name-backend" "$api" "$metrics"
    chaos_proxy_start "$name-proxy" "$port" "$proxy_metrics" "127.0.0.1:$api"
}

pod_ports() { echo "$(chaos_port) $(chaos_port) $(chaos_port) $(chaos_port)" >"$CHAOS_WORK/$1.ports"; }
pod_proxy_port() { awk '{print $3}' "$CHAOS_WORK/$1.ports"; }
pod_proxy_metrics() { echo "http://127.0.0.1:$(awk '{print $4}' "$CHAOS_WORK/$1.ports")/metrics"; }

# haproxy_start: chaos/haproxy/quantaid.cfg with this run's ports, in the foreground
# (-db) under chaos_spawn.
haproxy_start() {
    command -v haproxy >/dev/null || { apt-get update -qq >/dev/null && apt-get install -y -qq haproxy >/dev/null; } \
        || die "cannot install haproxy"
    HAPROXY_PORT=$(chaos_port) HAPROXY_STATS=$(chaos_port)
    local servers
    servers=$(printf '    server pod-a 127.0.0.1:%s\\n    server pod-b 127.0.0.1:%s' "$(pod_proxy_port pod-a)" "$(pod_proxy_port pod-b)")
    sed -e "s/@LISTEN@/127.0.0.1:$HAPROXY_PORT/" -e "s/@STATS@/127.0.0.1:$HAPROXY_STATS/" -e "s/@SERVERS@/$servers/" \
        "$ROOT/chaos/haproxy/quantaid.cfg" >"$CHAOS_WORK/haproxy.cfg"
    haproxy -c -q -f "$CHAOS_WORK/haproxy.cfg" || die "the HAProxy configuration is invalid"
    chaos_spawn haproxy haproxy -db -f "$CHAOS_WORK/haproxy.cfg"
    local i
    for ((i = 0; i < 100; i++)); do
        [ "$(haproxy_state pod-a)$(haproxy_state pod-b)" = UPUP ] && return 0
        sleep 0.1
    done
    die "HAProxy did not see both pods up"
}

# haproxy_state SERVER: UP, DOWN, ... from the stats CSV (column 18 is the status).
haproxy_state() {
    curl -fsS --max-time 1 "http://127.0.0.1:$HAPROXY_STATS/stats;csv" 2>/dev/null \
        | awk -F, -v s="$1" '$1 == "pods" && $2 == s {print $18}' | cut -d' ' -f1
}

# haproxy_retried: requests HAProxy sent more than once: in its log line, the field
# actconn/feconn/beconn/srv_conn/retries (followed by srv_queue/backend_queue) ends with the
# retries, "+N" when the request was redispatched to another pod.
haproxy_retried() {
    awk '{ for (i = 1; i < NF; i++) if ($i ~ /^[0-9]+\/[0-9]+\/[0-9]+\/[0-9]+\/\+?[0-9]+$/ && $(i + 1) ~ /^[0-9]+\/[0-9]+$/) { n = split($i, f, "/"); if (f[n] != "0") r++ } } END { print r + 0 }' \
        "$CHAOS_WORK/haproxy.log"
}

# proxy_requests POD: requests its proxy answered (its own counter; 0 while it is down).
proxy_requests() { chaos_prom "$(pod_proxy_metrics "$1")" 'quantaid_http_requests_total'; }

experiment_run() {
    local before down after rate
    read -r before down after rate <<<"$(pod_kill_timings)"
    CHAOS_PG_PORT=$(chaos_port) CHAOS_REDIS_PORT=$(chaos_port)
    chaos_pg_start postgres "$CHAOS_PG_PORT"
    chaos_redis_start redis "$CHAOS_REDIS_PORT"
    pod_ports pod-a
    pod_ports pod-b
    pod_start pod-a
    pod_start pod-b
    haproxy_start
    CHAOS_TARGETS=http://127.0.0.1:$HAPROXY_PORT
    CHAOS_CONDITIONS="two pods (proxy + backend) behind HAProxy $(haproxy -v | awk 'NR == 1 {print $3}')"
    say "pods a (:$(pod_proxy_port pod-a)) and b (:$(pod_proxy_port pod-b)) behind HAProxy :$HAPROXY_PORT"

    chaos_load_start $((before + down + after)) "$rate"
    sleep "$before"

    chaos_phase fault
    local b_before a_down_ms="" i
    b_before=$(proxy_requests pod-b)
    # Both processes of the pod at once, as when its node dies.
    kill -KILL -- "-$(pid_of pod-a-proxy)" "-$(pid_of pod-a-backend)"
    local killed_ms
    killed_ms=$(date +%s%3N)
    chaos_kill pod-a-proxy KILL
    chaos_kill pod-a-backend KILL
    for ((i = 0; i < 100; i++)); do
        [ "$(haproxy_state pod-a)" = DOWN ] && { a_down_ms=$(($(date +%s%3N) - killed_ms)); break; }
        sleep 0.1
    done
    sleep "$down"
    local b_fault
    b_fault=$(($(proxy_requests pod-b) - b_before))

    chaos_phase restart
    local restart_ms ready_ms up_ms=""
    restart_ms=$(date +%s%3N)
    pod_start pod-a
    ready_ms=$(date +%s%3N)
    for ((i = 0; i < 200; i++)); do
        [ "$(haproxy_state pod-a)" = UP ] && { up_ms=$(date +%s%3N); break; }
        sleep 0.1
    done
    chaos_phase rejoined
    local a_rejoined
    a_rejoined=$(proxy_requests pod-a)
    chaos_load_wait
    local a_after b_total
    a_after=$(($(proxy_requests pod-a) - a_rejoined))
    b_total=$(proxy_requests pod-b)

    local requests failed
    requests=$(chaos_metric requests) failed=$(chaos_metric failed)
    chaos_expect "failed requests (% of all)" "$(awk -v f="$failed" -v r="$requests" 'BEGIN{printf "%.3f", 100 * f / r}')" '<' 0.1
    chaos_expect "failed requests while one pod is down" "$(chaos_metric 'failed@fault')" '<=' "$(awk -v r="$(chaos_metric 'requests@fault')" 'BEGIN{printf "%d", r / 1000}')"
    chaos_expect "requests the surviving pod answered while the other was down" "$b_fault" '>=' $((rate * down * 9 / 10))
    chaos_expect "seconds until HAProxy marked the killed pod down" "$(awk -v m="${a_down_ms:-}" 'BEGIN{if (m == "") print ""; else printf "%.1f", m / 1000}')" '<=' 2
    if [ -n "$up_ms" ]; then
        chaos_expect "seconds from the restarted pod's /ready to HAProxy sending it traffic" \
            "$(awk -v u="$up_ms" -v r="$ready_ms" 'BEGIN{printf "%.1f", (u - r) / 1000}')" '<=' 3
    else
        chaos_expect "seconds from the restarted pod's /ready to HAProxy sending it traffic" "" '<=' 3
    fi
    chaos_expect "requests the restarted pod answered after rejoining" "$a_after" '>' 0
    # HAProxy must not send it anything before it is ready.
    chaos_expect "failed requests while the pod restarts and rejoins" \
        $(($(chaos_metric 'failed@restart') + $(chaos_metric 'failed@rejoined'))) '==' 0
    chaos_expect "'active' answers for revoked credentials" "$(chaos_metric stale_active)" '==' 0
    chaos_note "pod restart took $(awk -v r="$ready_ms" -v s="$restart_ms" 'BEGIN{printf "%.1f", (r - s) / 1000}') s to /ready; requests HAProxy retried on another pod: $(haproxy_retried)"
    chaos_note "pod b's proxy answered $b_total requests in all, $b_fault of them while pod a was down"
    chaos_note "failed requests by phase: before $(chaos_metric 'failed@before'), fault $(chaos_metric 'failed@fault'), restart $(chaos_metric 'failed@restart'), rejoined $(chaos_metric 'failed@rejoined')"
}

experiment_k8s() {
    # One QuantaID pod deleted without grace behind the Service (kube-proxy or the ingress
    # takes the place of HAProxy); the Deployment starts a replacement, which the readiness
    # probe on /ready admits.
    local before down after rate
    read -r before down after rate <<<"$(pod_kill_timings)"
    chaos_k8s_setup
    local selector=${CHAOS_K8S_POD_SELECTOR:-app.kubernetes.io/name=quantaid}
    local pod
    pod=$(kube get pods -l "$selector" -o jsonpath='{.items[0].metadata.name}')
    [ -n "$pod" ] || die "no pod matches $selector"
    chaos_load_start $((before + down + after)) "$rate"
    sleep "$before"
    chaos_phase fault
    chaos_k8s_kill_pod "$pod"
    sleep "$down"
    chaos_phase rejoined
    chaos_k8s_wait_ready "$selector" 180
    chaos_load_wait
    local requests failed
    requests=$(chaos_metric requests) failed=$(chaos_metric failed)
    chaos_expect "failed requests (% of all)" "$(awk -v f="$failed" -v r="$requests" 'BEGIN{printf "%.3f", 100 * f / r}')" '<' 0.1
    chaos_expect "'active' answers for revoked credentials" "$(chaos_metric stale_active)" '==' 0
}
