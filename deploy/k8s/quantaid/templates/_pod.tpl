{{/* Pod-level settings shared by the jobs (migrations, backups). Argument: (list $ hook),
where hook is true for a Helm hook: it runs before the chart's ServiceAccount exists, so it
uses the namespace's default one unless an existing account is named. */}}
{{- define "quantaid.jobPodSpec" -}}
{{- $root := index . 0 -}}{{- $hook := index . 1 -}}
{{- with $root -}}
{{- if or (not $hook) (not .Values.serviceAccount.create) }}
serviceAccountName: {{ include "quantaid.serviceAccountName" . }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
restartPolicy: Never
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
{{- end -}}
