# shellcheck shell=bash # sourced by chaos/lib/common.sh
# Toxiproxy (github.com/Shopify/toxiproxy): a TCP proxy whose links can be slowed or cut
# through its HTTP API. Built once with `go install` and cached outside the clone.
# Sourced by chaos/lib/common.sh; the functions are listed in chaos/run.sh's contract.

TOXIPROXY_VERSION=v2.5.0
TOXIPROXY_CACHE=${QUANTAID_CACHE_DIR:-/var/tmp/quantaid-cache}/toxiproxy/$TOXIPROXY_VERSION
TOXIPROXY_BIN=$TOXIPROXY_CACHE/server
TOXIPROXY_CLI=$TOXIPROXY_CACHE/cli
TOXIPROXY_URL=""

# chaos_toxiproxy_install: builds server and cli into the cache unless they are there.
chaos_toxiproxy_install() {
    if [ -x "$TOXIPROXY_BIN" ] && [ -x "$TOXIPROXY_CLI" ]; then return 0; fi
    if ! command -v go >/dev/null; then
        [ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH
    fi
    command -v go >/dev/null || die "Toxiproxy needs Go to build (install golang, or put go on PATH)"
    say "building Toxiproxy $TOXIPROXY_VERSION into $TOXIPROXY_CACHE (once; about a minute)"
    mkdir -p "$TOXIPROXY_CACHE"
    # A private GOPATH keeps the module cache with the binaries, out of the clone.
    GOBIN=$TOXIPROXY_CACHE GOPATH=$TOXIPROXY_CACHE/gopath GOFLAGS=-modcacherw \
        nice -n 10 go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" \
        "github.com/Shopify/toxiproxy/v2/cmd/cli@$TOXIPROXY_VERSION" \
        || die "go install of Toxiproxy failed"
    { [ -x "$TOXIPROXY_BIN" ] && [ -x "$TOXIPROXY_CLI" ]; } || die "go install did not produce $TOXIPROXY_BIN and $TOXIPROXY_CLI"
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

toxi_cli() { "$TOXIPROXY_CLI" -h "$TOXIPROXY_URL" "$@" >/dev/null; }

# chaos_toxi_create NAME LISTEN_PORT UPSTREAM_HOSTPORT
chaos_toxi_create() {
    toxi_cli create -l "127.0.0.1:$2" -u "$3" "$1" || die "toxiproxy: cannot create proxy $1"
}

# chaos_toxi_add NAME TOXIC_NAME TYPE [ATTR=VALUE...]   e.g. chaos_toxi_add pg slow latency latency=500
chaos_toxi_add() {
    local proxy=$1 toxic=$2 type=$3 attr
    shift 3
    local -a attrs=()
    for attr in "$@"; do attrs+=(-a "$attr"); done
    toxi_cli toxic add -n "$toxic" -t "$type" "${attrs[@]}" "$proxy" || die "toxiproxy: cannot add $type to $proxy"
}

# chaos_toxi_remove NAME TOXIC_NAME
chaos_toxi_remove() { toxi_cli toxic remove -n "$2" "$1" || die "toxiproxy: cannot remove $2 from $1"; }

# chaos_toxi_cut NAME / chaos_toxi_restore NAME: the link is down (live connections are
# closed, new ones refused) / up again. Through the API: the CLI only has a toggle.
chaos_toxi_cut() { toxi_enable "$1" false; }
chaos_toxi_restore() { toxi_enable "$1" true; }
toxi_enable() {
    curl -fsS -o /dev/null -X POST "$TOXIPROXY_URL/proxies/$1" -H 'Content-Type: application/json' \
        --data "{\"enabled\": $2}" || die "toxiproxy: cannot set $1 enabled=$2"
}
