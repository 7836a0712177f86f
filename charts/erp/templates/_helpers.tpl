{{/* Names and labels shared by every template. */}}

{{- define "erp.fullname" -}}
{{- printf "%s-service" .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "erp.chartLabel" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels for one service; call with (dict "name" $name "root" $) */}}
{{- define "erp.labels" -}}
helm.sh/chart: {{ include "erp.chartLabel" .root }}
{{ include "erp.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: erp
erp/environment: {{ .root.Values.environment }}
{{- end -}}

{{- define "erp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "erp.fullname" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "erp.image" -}}
{{- /* a promotion pins the exact image dev ran: tag@digest (the digest decides what is pulled) */ -}}
{{- if .svc.image.digest -}}
{{- printf "%s/%s:%s@%s" .root.Values.image.registry .svc.image.repository (.svc.image.tag | toString) .svc.image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .svc.image.repository (.svc.image.tag | toString) -}}
{{- end -}}
{{- end -}}
