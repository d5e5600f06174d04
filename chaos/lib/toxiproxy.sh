# shellcheck shell=bash # sourced by chaos/lib/common.sh
# Toxiproxy (github.com/Shopify/toxiproxy): a TCP proxy whose links can be slowed or cut
# through its HTTP API. Built once with `go install` and cached outside the clone.
# Every verb below speaks the HTTP API at $TOXIPROXY_URL: a local server
# (chaos_toxiproxy_start) or, with --k8s, a pod's Toxiproxy sidecar through
# `kubectl port-forward` (chaos_k8s_toxiproxy in chaos/lib/k8s.sh), with the same code.
# Sourced by chaos/lib/common.sh; the functions are listed in chaos/run.sh's contract.

TOXIPROXY_VERSION=v2.5.0
TOXIPROXY_CACHE=${QUANTAID_CACHE_DIR:-/var/tmp/quantaid-cache}/toxiproxy/$TOXIPROXY_VERSION
TOXIPROXY_BIN=$TOXIPROXY_CACHE/server
TOXIPROXY_URL=""

# chaos_toxiproxy_install: builds the server into the cache unless it is there.
chaos_toxiproxy_install() {
    if [ -x "$TOXIPROXY_BIN" ]; then return 0; fi
    if ! command -v go >/dev/null; then
        [ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH
    fi
    command -v go >/dev/null || die "Toxiproxy needs Go to build (install golang, or put go on PATH)"
    say "building Toxiproxy $TOXIPROXY_VERSION into $TOXIPROXY_CACHE (once; about a minute)"
    mkdir -p "$TOXIPROXY_CACHE"
    # A private GOPATH keeps the module cache with the binaries, out of the clone.
    GOBIN=$TOXIPROXY_CACHE GOPATH=$TOXIPROXY_CACHE/gopath GOFLAGS=-modcacherw \
        nice -n 10 go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" \
        || die "go install of Toxiproxy failed"
    [ -x "$TOXIPROXY_BIN" ] || die "go install did not produce $TOXIPROXY_BIN"
}

# chaos_toxiproxy_start: a Toxiproxy server on a free port (TOXIPROXY_URL).
chaos_toxiproxy_start() {
    chaos_toxiproxy_install
    local port
    port=$(chaos_port)
    chaos_spawn toxiproxy "$TOXIPROXY_BIN" -host 127.0.0.1 -port "$port"
    TOXIPROXY_URL=http://127.0.0.1:$port
    chaos_wait_http "$TOXIPROXY_URL/version" 20
}

# toxi_api METHOD PATH [JSON]: one call to the API; fails on a non-2xx answer.
toxi_api() {
    [ -n "$TOXIPROXY_URL" ] || die "toxiproxy: no server (TOXIPROXY_URL is empty)"
    curl -fsS -o /dev/null --max-time 10 -X "$1" "$TOXIPROXY_URL$2" ${3:+-H 'Content-Type: application/json' --data "$3"}
}

# chaos_toxi_create NAME LISTEN_PORT UPSTREAM_HOSTPORT
chaos_toxi_create() {
    toxi_api POST /proxies "$(jq -nc --arg n "$1" --arg l "127.0.0.1:$2" --arg u "$3" \
        '{name: $n, listen: $l, upstream: $u, enabled: true}')" || die "toxiproxy: cannot create proxy $1"
}

# chaos_toxi_add NAME TOXIC_NAME TYPE [ATTR=VALUE...]   e.g. chaos_toxi_add pg slow latency latency=500
# The toxic acts on the data coming back from the upstream (Toxiproxy's default stream);
# numeric values are sent as numbers.
chaos_toxi_add() {
    local proxy=$1 toxic=$2 type=$3 body
    shift 3
    body=$(jq -nc --arg n "$toxic" --arg t "$type" \
        '{name: $n, type: $t, stream: "downstream", toxicity: 1,
          attributes: ($ARGS.positional | map(index("=") as $i | {(.[:$i]): (.[$i + 1:] | tonumber? // .)}) | add // {})}' \
        --args "$@")
    toxi_api POST "/proxies/$proxy/toxics" "$body" || die "toxiproxy: cannot add $type to $proxy"
}

# chaos_toxi_remove NAME TOXIC_NAME
chaos_toxi_remove() { toxi_api DELETE "/proxies/$1/toxics/$2" || die "toxiproxy: cannot remove $2 from $1"; }

# chaos_toxi_cut NAME / chaos_toxi_restore NAME: the link is down (live connections are
# closed, new ones refused) / up again.
chaos_toxi_cut() { toxi_enable "$1" false; }
chaos_toxi_restore() { toxi_enable "$1" true; }
toxi_enable() { toxi_api POST "/proxies/$1" "{\"enabled\": $2}" || die "toxiproxy: cannot set $1 enabled=$2"; }
