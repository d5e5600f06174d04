{{/* Names and labels. */}}
{{- define "quantaid.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "quantaid.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "quantaid.labels" -}}
{{ include "quantaid.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "quantaid.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "quantaid.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "quantaid.fullname" .) }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end -}}

{{- define "quantaid.secretName" -}}
{{ .Values.secrets.existingSecret | default (include "quantaid.fullname" .) }}
{{- end -}}

{{/* Whether the prometheus-operator resources are rendered (see metrics.prometheusOperator). */}}
{{- define "quantaid.prometheusOperator" -}}
{{- $mode := toString .Values.metrics.prometheusOperator -}}
{{- if or (eq $mode "true") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{/*
The connection budget: the most pods that can exist at once (maxReplicas, or replicaCount,
plus the rolling update's surge) times each pool's maximum must fit in what the database
allows us. Returns the per-pod pool maximum, or fails the render with the numbers.
*/}}
{{- define "quantaid.poolMax" -}}
{{- $db := .Values.database -}}
{{- $replicas := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled | int -}}
{{- $pods := add $replicas (.Values.rollingUpdate.maxSurge | int) | int -}}
{{- $budget := sub ($db.maxConnections | int) ($db.reservedConnections | int) | int -}}
{{- $fair := div $budget $pods | int -}}
{{- $explain := printf "database budget: maxConnections %d - reservedConnections %d = %d connections shared by up to %d pods (%d replicas + %d surge)" ($db.maxConnections | int) ($db.reservedConnections | int) $budget $pods $replicas (.Values.rollingUpdate.maxSurge | int) -}}
{{- $max := $fair -}}
{{- if not (kindIs "invalid" $db.pool.max) -}}
{{- $max = $db.pool.max | int -}}
{{- if gt (mul $max $pods | int) $budget -}}
{{- fail (printf "database.pool.max %d does not fit: %d pods x %d = %d > %d (%s). Lower database.pool.max or the replica count, or put a pooler such as PgBouncer in front and raise database.maxConnections to its capacity." $max $pods $max (mul $max $pods | int) $budget $explain) -}}
{{- end -}}
{{- end -}}
{{- if lt $max ($db.pool.min | int) -}}
{{- fail (printf "the per-pod pool maximum would be %d, below database.pool.min %d (%s). Raise database.maxConnections (or put a pooler such as PgBouncer in front), or lower maxReplicas or database.pool.min." $max ($db.pool.min | int) $explain) -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{/* Settings the chart derives; `config` may not set them. */}}
{{- define "quantaid.derivedEnv" -}}
{{- $v := .Values -}}
QUANTAID_LISTEN_ADDR: "127.0.0.1:8081"
QUANTAID_METRICS_ADDR: "0.0.0.0:9091"
QUANTAID_PROXY_LISTEN_ADDR: "0.0.0.0:8080"
QUANTAID_PROXY_METRICS_ADDR: "0.0.0.0:9090"
QUANTAID_BACKEND_ADDR: "127.0.0.1:8081"
QUANTAID_SHUTDOWN_GRACE_SECS: {{ $v.backend.shutdownGraceSeconds | quote }}
QUANTAID_PROXY_SHUTDOWN_GRACE_SECS: {{ $v.proxy.shutdownGraceSeconds | quote }}
QUANTAID_TRUSTED_PROXIES: {{ join "," $v.trustedProxies | quote }}
QUANTAID_ISSUER: {{ $v.issuer | default (ternary (printf "%s://%s" (ternary "https" "http" $v.ingress.tls.enabled) $v.ingress.host) "http://localhost:8080" $v.ingress.enabled) | quote }}
QUANTAID_DB_HOST: {{ $v.database.host | quote }}
QUANTAID_DB_PORT: {{ $v.database.port | quote }}
QUANTAID_DB_NAME: {{ $v.database.name | quote }}
QUANTAID_DB_USER: {{ $v.database.user | quote }}
QUANTAID_DB_POOL_MIN: {{ $v.database.pool.min | quote }}
QUANTAID_DB_POOL_MAX: {{ include "quantaid.poolMax" . | quote }}
QUANTAID_DB_POOL_WAIT_MS: {{ $v.database.pool.waitMs | quote }}
QUANTAID_DB_STATEMENT_TIMEOUT_MS: {{ $v.database.pool.statementTimeoutMs | quote }}
QUANTAID_DB_MIGRATE_ON_START: {{ eq $v.migrations.mode "onStart" | quote }}
QUANTAID_REDIS_DB: {{ $v.redis.db | quote }}
{{- if eq $v.redis.mode "sentinel" }}
QUANTAID_REDIS_SENTINELS: {{ join "," $v.redis.sentinel.sentinels | quote }}
QUANTAID_REDIS_MASTER_NAME: {{ $v.redis.sentinel.masterName | quote }}
{{- else }}
QUANTAID_REDIS_HOST: {{ $v.redis.host | quote }}
{{- end }}
{{- end -}}

{{/*
Who each container is, for its OTLP logs and traces (protocol/src/telemetry.rs reads
OTEL_RESOURCE_ATTRIBUTES; the sidecar adds service.name itself), and where it exports them
when telemetry.* names an endpoint. The namespace and pod come from the downward API;
Kubernetes expands $(POD_NAMESPACE) and $(POD_NAME) because they are defined first.
Argument: (list $ "container name").
*/}}
{{- define "quantaid.otelEnv" -}}
{{- $t := (index . 0).Values.telemetry -}}{{- $container := index . 1 -}}
- name: POD_NAMESPACE
  valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
- name: POD_NAME
  valueFrom: { fieldRef: { fieldPath: metadata.name } }
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.container.name=%s" $container | quote }}
{{- with $t.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $t.otlpLogsEndpoint }}
- name: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Keys of the Secret, and which container reads which. */}}
{{- define "quantaid.secretKeys" -}}
{{- $keys := list "DB_PASSWORD" "REDIS_PASSWORD" "QUANTAID_INTERNAL_TOKEN" -}}
{{- if .Values.secrets.bootstrapAdminToken }}{{ $keys = append $keys "QUANTAID_BOOTSTRAP_ADMIN_TOKEN" }}{{ end -}}
{{- join "," $keys -}}
{{- end -}}

{{/* Secret entries as env vars; `skip` lists keys the container does not read. The
Secret keeps the keys it always had (an upgrade finds its generated passwords, an
existingSecret keeps working); the containers read the database and Redis passwords
under their QUANTAID_ names. */}}
{{- define "quantaid.secretEnv" -}}
{{- $ctx := index . 0 -}}{{- $skip := index . 1 -}}
{{- range splitList "," (include "quantaid.secretKeys" $ctx) }}
{{- if not (has . $skip) }}
- name: {{ get (dict "DB_PASSWORD" "QUANTAID_DB_PASSWORD" "REDIS_PASSWORD" "QUANTAID_REDIS_PASSWORD") . | default . }}
  valueFrom:
    secretKeyRef:
      name: {{ include "quantaid.secretName" $ctx }}
      key: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "quantaid.checks" -}}
{{- $v := .Values -}}
{{- $derived := include "quantaid.derivedEnv" . | fromYaml -}}
{{- /* The OTLP settings quantaid.otelEnv sets, and the value to use for each instead. */}}
{{- $otel := dict "OTEL_RESOURCE_ATTRIBUTES" "the chart sets it for each container" "OTEL_EXPORTER_OTLP_ENDPOINT" "set telemetry.otlpEndpoint instead" "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" "set telemetry.otlpEndpoint instead" "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT" "set telemetry.otlpLogsEndpoint instead" -}}
{{- range $k, $_ := $v.config }}
{{- if hasKey $derived $k }}{{ fail (printf "config.%s is derived by the chart; set it through its own value (database.*, redis.*, issuer, trustedProxies, proxy.*/backend.*) instead" $k) }}{{ end }}
{{- with get $otel $k }}{{ fail (printf "config.%s has a value of its own: %s" $k .) }}{{ end }}
{{- if has $k (list "DB_PASSWORD" "REDIS_PASSWORD" "QUANTAID_DB_PASSWORD" "QUANTAID_REDIS_PASSWORD" "QUANTAID_INTERNAL_TOKEN" "QUANTAID_BOOTSTRAP_ADMIN_TOKEN") }}{{ fail (printf "config.%s is a secret and may not go in the ConfigMap; put it in the Secret named by secrets.existingSecret" $k) }}{{ end }}
{{- end }}
{{- if and (eq $v.migrations.mode "hookJob") (not $v.secrets.existingSecret) }}
{{- fail "migrations.mode hookJob needs secrets.existingSecret: the pre-install Job runs before the chart's own Secret exists" }}
{{- end }}
{{- if and (eq $v.redis.mode "sentinel") (not $v.redis.sentinel.sentinels) }}
{{- fail "redis.mode sentinel needs redis.sentinel.sentinels (host:port of each Sentinel)" }}
{{- end }}
{{- include "quantaid.checkResources" (list "proxy" $v.proxy.resources) }}
{{- include "quantaid.checkResources" (list "backend" $v.backend.resources) }}
{{- include "quantaid.checkResources" (list "backup" $v.backup.resources) }}
{{- if and $v.backup.enabled (or (not $v.backup.image) (not $v.backup.command)) }}
{{- fail "backup.enabled needs backup.image and backup.command" }}
{{- end }}
{{- end -}}

{{/* A CPU quantity in millicores ("250m", "0.5", "2"). */}}
{{- define "quantaid.millicores" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}{{ trimSuffix "m" $q | float64 }}{{- else -}}{{ mulf ($q | float64) 1000 }}{{- end -}}
{{- end -}}

{{/* A memory quantity in bytes ("96Mi", "1Gi", "500M", "1048576"). */}}
{{- define "quantaid.bytes" -}}
{{- $q := toString . -}}
{{- $units := dict "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "K" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- $suffix := regexFind "[A-Za-z]+$" $q -}}
{{- $n := trimSuffix $suffix $q | float64 -}}
{{- if $suffix }}{{ mulf $n (get $units $suffix) }}{{ else }}{{ $n }}{{ end -}}
{{- end -}}

{{/* Fails when a container's limit is below its request. Argument: (list "name" resources). */}}
{{- define "quantaid.checkResources" -}}
{{- $name := index . 0 -}}{{- $r := index . 1 -}}
{{- if and $r.requests.cpu $r.limits.cpu (lt (include "quantaid.millicores" $r.limits.cpu | float64) (include "quantaid.millicores" $r.requests.cpu | float64)) -}}
{{- fail (printf "%s.resources: the cpu limit %v is below its request %v" $name $r.limits.cpu $r.requests.cpu) -}}
{{- end -}}
{{- if and $r.requests.memory $r.limits.memory (lt (include "quantaid.bytes" $r.limits.memory | float64) (include "quantaid.bytes" $r.requests.memory | float64)) -}}
{{- fail (printf "%s.resources: the memory limit %v is below its request %v" $name $r.limits.memory $r.requests.memory) -}}
{{- end -}}
{{- end -}}
