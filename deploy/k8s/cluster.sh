#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the chart's tests: etcd (Debian's
# etcd-server), kube-apiserver, kube-controller-manager and kube-scheduler built from
# k8s.io/kubernetes, and kwok playing the kubelet for three fake nodes in three zones.
# Nothing runs containers: pods are scheduled and reported Running/Ready by kwok.
#
#   cluster.sh start DIR   # writes DIR/kubeconfig and DIR/pids; prints nothing else on success
#   cluster.sh stop DIR    # stops exactly the processes it started (DIR/pids)
set -euo pipefail

CACHE="${QUANTAID_CACHE:-/var/tmp/quantaid-cache}"
K8S_BIN="$CACHE/k8s-v1.37.2"
KWOK_DIR="$CACHE/kwok-v0.8.0"
cmd=${1:?start|stop}; dir=${2:?state directory}
log() { printf '[cluster] %s\n' "$*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop() {
  [[ -f "$dir/pids" ]] || return 0
  local pid
  # Reverse start order; only the pids this script recorded.
  for pid in $(tac "$dir/pids"); do kill "$pid" 2>/dev/null || true; done
  for pid in $(tac "$dir/pids"); do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$dir/pids"
}

run() { # run NAME CMD...: starts in the background, logs to DIR/NAME.log, records the pid
  local name=$1; shift
  "$@" >"$dir/$name.log" 2>&1 &
  echo $! >>"$dir/pids"
}

wait_for() { # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then log "$what did not come up in ${secs}s; last log lines:"; tail -n 20 "$dir"/*.log >&2; return 1; fi
    sleep 0.5
  done
}

certs() {
  local pki=$dir/pki; mkdir -p "$pki"; cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=quantaid-test-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' >san.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile san.ext 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=quantaid-test-admin" 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  chmod 600 ./*.key
  cd - >/dev/null
}

start() {
  mkdir -p "$dir"; : >"$dir/pids"
  certs
  local etcd_port peer_port api_port kwok_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); kwok_port=$(free_port)
  local pki=$dir/pki kc=$dir/kubeconfig
  cat >"$kc" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: { server: "https://127.0.0.1:$api_port", certificate-authority: "$pki/ca.crt" }
users:
- name: admin
  user: { client-certificate: "$pki/admin.crt", client-key: "$pki/admin.key" }
contexts:
- name: test
  context: { cluster: test, user: admin }
current-context: test
KC
  run etcd etcd --name test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "test=http://127.0.0.1:$peer_port" --logger zap --log-level warn
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"
  # The service range is only allocated from, never sent traffic.
  run kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" --service-cluster-ip-range 10.96.0.0/24 \
    --allow-privileged=false --enable-priority-and-fairness=false --endpoint-reconciler-type none
  wait_for kube-apiserver 120 "$K8S_BIN/kubectl" --kubeconfig "$kc" get --raw /readyz
  run kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=false --horizontal-pod-autoscaler-sync-period 5s \
    --node-monitor-grace-period 10m
  run kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false
  local stages=() f
  # Nodes heartbeat through their status every 20-45 s (kwok's "heartbeat" stage), hence the
  # controller manager's long node-monitor grace period: a late heartbeat must not mark the
  # nodes, and with them every pod, NotReady in the middle of a test.
  for f in "$KWOK_DIR"/stage/node/fast/*.yaml "$KWOK_DIR"/stage/node/heartbeat/*.yaml "$KWOK_DIR"/stage/pod/fast/*.yaml; do
    [[ $(basename "$f") == kustomization.yaml ]] || stages+=(--config "$f")
  done
  run kwok "$KWOK_DIR/kwok" --kubeconfig "$kc" "${stages[@]}" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --node-port 0 --server-address "127.0.0.1:$kwok_port" --cidr 10.244.0.1/24 \
    --node-lease-duration-seconds 0
  local zone i
  for i in 1 2 3; do
    zone=zone-$(printf '%s' abc | cut -c$i)
    "$K8S_BIN/kubectl" --kubeconfig "$kc" apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: { kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0" }
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: $zone
    type: kwok
status:
  allocatable: { cpu: "4", memory: 8Gi, pods: "110" }
  capacity: { cpu: "4", memory: 8Gi, pods: "110" }
NODE
  done
  wait_for "three Ready nodes" 60 bash -c "[[ \$('$K8S_BIN/kubectl' --kubeconfig '$kc' get nodes --no-headers 2>/dev/null | grep -c ' Ready') == 3 ]]"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
