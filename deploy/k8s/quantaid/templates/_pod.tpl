{{/* Pod-level settings shared by the Deployment's jobs (migrations, backups). */}}
{{- define "quantaid.jobPodSpec" -}}
serviceAccountName: {{ include "quantaid.serviceAccountName" . }}
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
