{{/*
Names and labels of every object of the chart. Names are fixed (nbscale-<component>), not derived
from the release name: the z2jh values, the cluster config and the executor's error messages name
them, so install the chart once per namespace.
*/}}

{{/* The name of a component's objects: (list $ "quotas") -> nbscale-quotas */}}
{{- define "nbscale.name" -}}
{{- printf "nbscale-%s" (index . 1) -}}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "nbscale.labels" -}}
app.kubernetes.io/name: nbscale
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels that select one component's pods: (list $ "quotas") */}}
{{- define "nbscale.selectorLabels" -}}
app.kubernetes.io/name: nbscale
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Metadata of a component's object: (list $ "quotas") or (list $ "quotas" "suffix") */}}
{{- define "nbscale.metadata" -}}
{{- $root := index . 0 -}}
name: {{ include "nbscale.name" . }}{{ if gt (len .) 2 }}-{{ index . 2 }}{{ end }}
namespace: {{ $root.Release.Namespace }}
labels:
  {{- include "nbscale.labels" $root | nindent 2 }}
  app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The image every nbscale container runs (the single-user image; steps use it too). */}}
{{- define "nbscale.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end }}

{{/* The tracking URI step pods and single-user servers use: the chart's server, else the given one. */}}
{{- define "nbscale.mlflowTrackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "nbscale.name" (list . "mlflow")) .Release.Namespace (int .Values.mlflow.port) -}}
{{- else -}}
{{- .Values.mlflow.externalTrackingUri -}}
{{- end -}}
{{- end }}

{{/* A secretKeyRef from {secretName, secretKey}. */}}
{{- define "nbscale.secretKeyRef" -}}
valueFrom:
  secretKeyRef:
    name: {{ .secretName }}
    key: {{ .secretKey }}
{{- end }}
