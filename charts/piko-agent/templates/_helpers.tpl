{{/*
The chart's name, at most 63 characters (a label value).
*/}}
{{- define "piko-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release's name, with the chart's name appended unless the
release's name already contains it.
*/}}
{{- define "piko-agent.fullname" -}}
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

{{- define "piko-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "piko-agent.labels" -}}
helm.sh/chart: {{ include "piko-agent.chart" . }}
{{ include "piko-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: piko
{{- end }}

{{/*
The Deployment's selector (immutable: never add to it).
*/}}
{{- define "piko-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "piko-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The image reference: repository, tag (default: appVersion) and an optional
digest.
*/}}
{{- define "piko-agent.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The token's Secret and key: the user's, or the chart's; empty without a
token.
*/}}
{{- define "piko-agent.tokenSecret" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecret }}
{{- else if .Values.auth.token }}{{ include "piko-agent.fullname" . }}-token
{{- end }}
{{- end }}

{{- define "piko-agent.tokenKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/*
Whether a CA bundle is mounted (from the value, a Secret or a ConfigMap).
*/}}
{{- define "piko-agent.hasCA" -}}
{{- if or .Values.tls.rootCAs .Values.tls.existingSecret .Values.tls.existingConfigMap }}true{{ end }}
{{- end }}

{{- define "piko-agent.terminationGracePeriodSeconds" -}}
{{- $tg := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $tg }}{{ $tg = add .Values.gracePeriodSeconds 15 }}{{ end }}
{{- if le (int $tg) (int .Values.gracePeriodSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed gracePeriodSeconds (%v): the kubelet would kill the agent before its graceful shutdown ends" $tg .Values.gracePeriodSeconds) }}
{{- end }}
{{- int $tg }}
{{- end }}

{{/*
The agent's YAML configuration (agent/agent_config.c; Piko's §4.4 keys),
everything but the token.
*/}}
{{- define "piko-agent.config" -}}
{{- $connect := dict "url" (required "server.url is required (the Piko server's upstream URL)" .Values.server.url) "timeout" .Values.server.timeout }}
{{- with .Values.server.tenantId }}{{ $_ := set $connect "tenant_id" . }}{{ end }}
{{- $tls := dict }}
{{- if include "piko-agent.hasCA" . }}{{ $_ := set $tls "root_cas" (printf "/etc/piko/tls/%s" .Values.tls.key) }}{{ end }}
{{- if .Values.tls.insecureSkipVerify }}{{ $_ := set $tls "insecure_skip_verify" true }}{{ end }}
{{- if $tls }}{{ $_ := set $connect "tls" $tls }}{{ end }}
{{- $listeners := list }}
{{- range .Values.listeners }}
{{- $l := dict "endpoint_id" .endpointId "addr" (toString .addr) "protocol" (default "http" .protocol) "timeout" (default "10s" .timeout) }}
{{- with .accessLog }}
{{- $al := dict }}
{{- if hasKey . "level" }}{{ $_ := set $al "level" .level }}{{ end }}
{{- if hasKey . "disable" }}{{ $_ := set $al "disable" .disable }}{{ end }}
{{- $src := . }}
{{- range $side := list "request" "response" }}
{{- with get $src (printf "%sHeaders" $side) }}
{{- $h := dict }}
{{- with .allowList }}{{ $_ := set $h "allow_list" . }}{{ end }}
{{- with .blockList }}{{ $_ := set $h "block_list" . }}{{ end }}
{{- $_ := set $al (printf "%s_headers" $side) $h }}
{{- end }}
{{- end }}
{{- $_ := set $l "access_log" $al }}
{{- end }}
{{- $listeners = append $listeners $l }}
{{- end }}
{{- $cfg := dict "connect" $connect "listeners" $listeners "log" (dict "level" .Values.logLevel) "grace_period" (printf "%ds" (int .Values.gracePeriodSeconds)) "server" (dict "enabled" true "bind_addr" (printf ":%d" (int .Values.metrics.port))) }}
{{- toYaml $cfg }}
{{- end }}
