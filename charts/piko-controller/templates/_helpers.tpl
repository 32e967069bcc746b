{{/*
The chart's name, at most 63 characters (a label value).
*/}}
{{- define "piko-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release's name, with the chart's name appended unless the
release's name already contains it ("piko-controller" for a release of that
name, as in crds/controller.yaml).
*/}}
{{- define "piko-controller.fullname" -}}
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

{{- define "piko-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. The controller's own children are labelled
app.kubernetes.io/managed-by=piko-controller and name=piko; these are not,
so its watches never see the chart's objects.
*/}}
{{- define "piko-controller.labels" -}}
helm.sh/chart: {{ include "piko-controller.chart" . }}
{{ include "piko-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: piko
{{- end }}

{{/*
The Deployment's selector (immutable: never add to it).
*/}}
{{- define "piko-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "piko-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "piko-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "piko-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "piko-controller.leaseName" -}}
{{- default (include "piko-controller.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The image reference: repository, tag (default: appVersion) and an optional
digest.
*/}}
{{- define "piko-controller.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Whether the cluster serves prometheus-operator's ServiceMonitor (helm
template: only with --api-versions monitoring.coreos.com/v1/ServiceMonitor).
*/}}
{{- define "piko-controller.hasServiceMonitor" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" }}true{{ end }}
{{- end }}
