{{/* The chart's name, or nameOverride. */}}
{{- define "inference-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object: the release name, with the chart's appended unless it already contains it. */}}
{{- define "inference-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "inference-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inference-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "inference-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "inference-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "inference-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "inference-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "inference-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The `job` label Prometheus gives the exporter's series: the Service's name, or namespace/name for a PodMonitor. */}}
{{- define "inference-exporter.job" -}}
{{- if .Values.podMonitor.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "inference-exporter.fullname" .) }}
{{- else }}
{{- include "inference-exporter.fullname" . }}
{{- end }}
{{- end }}

{{/* Where the config is mounted: a directory, never a subPath, so ConfigMap updates reach the pod. */}}
{{- define "inference-exporter.configDir" -}}
/etc/inference-exporter
{{- end }}
