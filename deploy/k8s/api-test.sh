# shellcheck shell=bash disable=SC2154 # $here, $chart, $work and $repo are deploy/k8s/test.sh's
# Sourced by deploy/k8s/test.sh with KUBECONFIG pointing at the loopback control plane
# (deploy/k8s/cluster.sh). Uses test.sh's check/ok/not_ok, $work, $chart, $here, $repo.
# kwok plays the kubelet: pods are scheduled and reported Running and Ready, no container runs.

ns=quantaid-test
values=$here/values/default.yaml
crds=$CACHE/monitoring-crds-v0.85.0
k() { kubectl -n "$ns" "$@"; }
# until_true SECONDS CMD...: polls CMD every half second.
until_true() { local deadline=$((SECONDS + $1)); shift; until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.5; done; }
ready_pods() { k get deploy quantaid -o jsonpath='{.status.readyReplicas}' 2>/dev/null; }
pdb_allowed() { k get pdb quantaid -o jsonpath='{.status.disruptionsAllowed}' 2>/dev/null; }
py() { python3 -c "$@"; }

check "the monitoring CRDs (ServiceMonitor, PodMonitor, PrometheusRule) are accepted" \
  bash -c "kubectl apply --server-side -f '$crds' >/dev/null && kubectl wait --for condition=established --timeout 60s \
           crd/servicemonitors.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com"
kubectl create namespace "$ns" >/dev/null

check "helm refuses an install whose pools would exhaust the database, and creates nothing" \
  bash -c "! helm install quantaid '$chart' -n '$ns' -f '$values' --set database.pool.max=100 2>'$work/err' &&
           grep -q 'does not fit: 11 pods x 100 = 1100 > 90' '$work/err' && [[ -z \$(kubectl -n '$ns' get deploy -o name) ]]"

check "helm install is accepted and the Deployment becomes available" \
  helm install quantaid "$chart" -n "$ns" -f "$values" --wait --timeout 3m
check "the HPA brings the Deployment to its minimum of 3 ready pods" until_true 120 bash -c "[[ \$(kubectl -n $ns get deploy quantaid -o jsonpath='{.status.readyReplicas}') == 3 ]]"

k get pods -l app.kubernetes.io/instance=quantaid -o json >"$work/pods.json"
check "every pod is scheduled and runs the proxy with the backend as its native sidecar" py '
import json, sys
pods = json.load(open(sys.argv[1]))["items"]
assert len(pods) == 3, f"{len(pods)} pods"
for p in pods:
    s = p["spec"]
    assert s.get("nodeName"), p["metadata"]["name"] + " not scheduled"
    assert [c["name"] for c in s["containers"]] == ["proxy"], s["containers"]
    assert [(c["name"], c.get("restartPolicy")) for c in s["initContainers"]] == [("backend", "Always")]
    assert p["status"]["phase"] == "Running", p["status"]["phase"]
    ready = {c["type"]: c["status"] for c in p["status"]["conditions"]}
    assert ready.get("Ready") == "True", ready
    assert s["automountServiceAccountToken"] is False
' "$work/pods.json"
check "the pods are spread over three nodes in three zones" py '
import json, sys
pods = json.load(open(sys.argv[1]))["items"]
nodes = {p["spec"]["nodeName"] for p in pods}
assert len(nodes) == 3, nodes
' "$work/pods.json"
check "Service, HPA, PDB, NetworkPolicy, ConfigMap, Secret and ServiceAccount exist" \
  k get service/quantaid hpa/quantaid pdb/quantaid networkpolicy/quantaid configmap/quantaid secret/quantaid serviceaccount/quantaid
check "the Service exposes 8080 and 9090 only" \
  bash -c "[[ \$(kubectl -n $ns get service quantaid -o jsonpath='{.spec.ports[*].port}') == '8080 9090' ]]"
check "ServiceMonitor, PodMonitor and PrometheusRule are created because the cluster serves monitoring.coreos.com/v1" \
  k get servicemonitor/quantaid podmonitor/quantaid-backend prometheusrule/quantaid
check "the HPA targets the Deployment between 3 and 10 pods at 70% CPU" \
  bash -c "[[ \$(kubectl -n $ns get hpa quantaid -o jsonpath='{.spec.scaleTargetRef.name} {.spec.minReplicas} {.spec.maxReplicas} {.spec.metrics[0].resource.target.averageUtilization}') == 'quantaid 3 10 70' ]]"
check "with all pods ready the PDB allows one disruption" until_true 60 bash -c "[[ \$(kubectl -n $ns get pdb quantaid -o jsonpath='{.status.disruptionsAllowed}') == 1 ]]"

secret_before=$(k get secret quantaid -o jsonpath='{.data}' | sha256sum)
old_hash=$(k get rs -l app.kubernetes.io/instance=quantaid -o jsonpath='{.items[0].metadata.labels.pod-template-hash}')
# Sample the available pods during the upgrade: with maxUnavailable 0 it never drops below 3.
( while :; do k get deploy quantaid -o jsonpath='{.status.availableReplicas}{"\n"}' 2>/dev/null; sleep 0.3; done ) >"$work/available.txt" &
sampler=$!
check "helm upgrade of a value rolls every pod under the PDB" \
  helm upgrade quantaid "$chart" -n "$ns" -f "$values" --set config.QUANTAID_LOG_LEVEL=debug --wait --timeout 3m
check "the rollout replaced all three pods" until_true 90 bash -c "
  [[ \$(kubectl -n $ns get deploy quantaid -o jsonpath='{.status.updatedReplicas}/{.status.readyReplicas}/{.status.replicas}') == 3/3/3 ]] &&
  [[ -z \$(kubectl -n $ns get pods -l pod-template-hash=$old_hash -o name) ]]"
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
check "no fewer than 3 pods were available at any point of the rollout" py '
import sys
seen = [int(l) for l in open(sys.argv[1]) if l.strip()]
assert seen and min(seen) >= 3, f"available replicas seen: min {min(seen) if seen else None} over {len(seen)} samples"
' "$work/available.txt"
check "the upgrade changed the setting in the ConfigMap" \
  bash -c "[[ \$(kubectl -n $ns get configmap quantaid -o jsonpath='{.data.QUANTAID_LOG_LEVEL}') == debug ]]"
check "the generated passwords and tokens survived the upgrade (lookup)" \
  bash -c "[[ \"\$(kubectl -n $ns get secret quantaid -o jsonpath='{.data}' | sha256sum)\" == '$secret_before' ]]"

# Voluntary disruption: with one pod unready the PDB refuses to evict another.
read -r -a pods <<<"$(k get pods -l app.kubernetes.io/instance=quantaid -o jsonpath='{.items[*].metadata.name}')"
set_ready() { k patch pod "$1" --subresource=status --type=strategic -p "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"$2\"}]}}" >/dev/null; }
evict() {
  printf '{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"%s","namespace":"%s"}}' "$1" "$ns" >"$work/eviction.json"
  kubectl create --raw "/api/v1/namespaces/$ns/pods/$1/eviction" -f "$work/eviction.json"
}
pdb_allows() { [[ $(pdb_allowed) == "$1" ]]; }
eviction_refused() { { ! evict "$1" 2>"$work/err" && grep -qi 'disruption budget' "$work/err"; } || { cat "$work/err"; return 1; }; }
running_without() { [[ $(k get pods -l app.kubernetes.io/instance=quantaid --field-selector=status.phase=Running -o name | grep -vc "/$1\$") == 3 ]]; }
eviction_granted() { evict "$1" >/dev/null && until_true 90 running_without "$1"; }
set_ready "${pods[0]}" False
check "with one pod unready the PDB allows no disruption" until_true 60 pdb_allows 0
check "evicting a second pod is refused by the PDB" eviction_refused "${pods[1]}"
set_ready "${pods[0]}" True
check "once it is ready again the PDB allows one disruption" until_true 60 pdb_allows 1
check "then the eviction is granted and a replacement pod becomes ready" eviction_granted "${pods[1]}"

# What the schema files cannot know: label syntax is checked by the API server only.
helm template --kube-version v1.37.2 quantaid "$chart" -n "$ns" -f "$values" --set-string 'podLabels.tier=not a valid label!' >"$work/bad-label.yaml" 2>"$work/bad-label.log"
check "kubeconform accepts a pod label value the API server will refuse" \
  kubeconform -strict -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$work/bad-label.yaml"
check "helm upgrade with it is refused by the API server's validation" \
  bash -c "! helm upgrade quantaid '$chart' -n '$ns' -f '$values' --set-string 'podLabels.tier=not a valid label!' >/dev/null 2>'$work/err' &&
           grep -q 'Invalid value' '$work/err' || { cat '$work/err'; exit 1; }"
check "the refused upgrade left the running pods alone" \
  bash -c "[[ \$(kubectl -n $ns get deploy quantaid -o jsonpath='{.status.readyReplicas}') == 3 && -z \$(kubectl -n $ns get deploy quantaid -o jsonpath='{.spec.template.metadata.labels.tier}') ]]"
check "the API server refuses a Deployment whose selector does not match its pods (kubeconform does not)" \
  bash -c "python3 -c \"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open('$work/rendered/default.yaml')) if d and d['kind'] == 'Deployment']
d = docs[0]; d['spec']['selector']['matchLabels']['app.kubernetes.io/name'] = 'other'
yaml.safe_dump(d, open('$work/mismatch.yaml', 'w'))\" &&
  kubeconform -strict -schema-location '$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json' '$work/mismatch.yaml' >/dev/null &&
  ! kubectl -n $ns apply --dry-run=server -f '$work/mismatch.yaml' 2>'$work/err' && grep -q 'selector' '$work/err'"

check "helm rollback returns to the first revision's settings" \
  bash -c "helm rollback quantaid 1 -n $ns --wait --timeout 3m >/dev/null &&
           [[ \$(kubectl -n $ns get configmap quantaid -o jsonpath='{.data.QUANTAID_LOG_LEVEL}') == info ]]"
check "helm uninstall removes everything the chart created" \
  bash -c "helm uninstall quantaid -n $ns --wait --timeout 2m >/dev/null &&
           [[ -z \$(kubectl -n $ns get deploy,svc,hpa,pdb,networkpolicy,configmap,secret,serviceaccount,servicemonitor,podmonitor,prometheusrule -l app.kubernetes.io/instance=quantaid -o name) ]]"

# hookJob mode: the Secret exists first, the migration Job runs (kwok completes it) before the pods.
k create secret generic quantaid-credentials --from-literal=DB_PASSWORD=x --from-literal=REDIS_PASSWORD=x \
  --from-literal=QUANTAID_INTERNAL_TOKEN=x --from-literal=QUANTAID_BOOTSTRAP_ADMIN_TOKEN=x >/dev/null
check "with an existing Secret the migration hook Job completes and the install proceeds" \
  helm install quantaid "$chart" -n "$ns" -f "$here/values/external-secret.yaml" --wait --wait-for-jobs --timeout 3m
check "the pods read the existing Secret and skip migrations at start" \
  bash -c "[[ \$(kubectl -n $ns get configmap quantaid -o jsonpath='{.data.QUANTAID_DB_MIGRATE_ON_START}') == false ]] &&
           kubectl -n $ns get deploy quantaid -o jsonpath='{.spec.template.spec.initContainers[0].env[?(@.name==\"QUANTAID_DB_PASSWORD\")].valueFrom.secretKeyRef.name}' | grep -qx quantaid-credentials &&
           ! kubectl -n $ns get secret quantaid >/dev/null 2>&1"
helm uninstall quantaid -n "$ns" --wait >/dev/null 2>&1
kubectl delete namespace "$ns" --wait=false >/dev/null

# Every command of the production guide, in order, against this API server.
section "10. docs/deployment/production-guide.md, every command"
python3 "$here/guide.py" "$repo/docs/deployment/production-guide.md" "$work/guide" "$repo" >"$work/guide.out" 2>&1
while IFS= read -r line; do
  case $line in
    "ok "*) ok "guide: ${line#ok }" ;;
    "FAILED "*) not_ok "guide: ${line#FAILED }" "$work/guide.last" ;;
  esac
done <"$work/guide.out"
grep -q '^ok \|^FAILED ' "$work/guide.out" || not_ok "the guide's commands ran" "$work/guide.out"
