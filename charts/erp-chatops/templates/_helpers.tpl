{{- define "erp-chatops.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "erp-chatops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 }}
{{ include "erp-chatops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "erp-chatops.selectorLabels" -}}
app.kubernetes.io/name: erp-chatops
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
