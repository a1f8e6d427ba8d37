{{/* Name of the chart, overridable. */}}
{{- define "meshrelay-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the objects: <release>-<chart> unless the release already contains it. */}}
{{- define "meshrelay-agent.fullname" -}}
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

{{- define "meshrelay-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "meshrelay-agent.labels" -}}
helm.sh/chart: {{ include "meshrelay-agent.chart" . }}
{{ include "meshrelay-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: meshrelay
app.kubernetes.io/component: relay-agent
{{- end }}

{{/* Labels that select the agent's pods. */}}
{{- define "meshrelay-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshrelay-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshrelay-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meshrelay-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "meshrelay-agent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Refuse combinations the agent would refuse at start (or that cannot work), with the value to
change, instead of a pod in CrashLoopBackOff.
*/}}
{{- define "meshrelay-agent.validate" -}}
{{- $_ := required "cluster is required: the name of this workload cluster (a KubernetesCluster of this name must exist on the management server)" .Values.cluster }}
{{- $_ := required "relay.address is required: host:port of the management server's relay endpoint" .Values.relay.address }}
{{- if not (regexMatch ":[0-9]+$" .Values.relay.address) }}
{{- fail (printf "relay.address %q: want host:port, e.g. mgmt.example.com:9900" .Values.relay.address) }}
{{- end }}
{{- $replicas := int .Values.replicas }}
{{- if lt $replicas 1 }}
{{- fail "replicas must be at least 1" }}
{{- end }}
{{- if and (gt $replicas 1) (not .Values.leaderElection) }}
{{- fail "replicas > 1 needs leaderElection: true (exactly one agent may write to the cluster)" }}
{{- end }}
{{- if and .Values.strategy (not .Values.leaderElection) (eq (toString (dig "type" "RollingUpdate" .Values.strategy)) "RollingUpdate") }}
{{- if not (has (toString (dig "rollingUpdate" "maxSurge" "25%" .Values.strategy)) (list "0" "0%")) }}
{{- fail "strategy: without leaderElection a rolling update must not start the new pod before the old one stops (rollingUpdate.maxSurge: 0): the management server refuses a second agent of a cluster while the first is connected, so the new pod would wait, never ready, and the rollout would stall; keep the default (Recreate), set maxSurge: 0, or use leaderElection: true" }}
{{- end }}
{{- end }}
{{- if not (has .Values.relay.tlsMode (list "mtls" "tls")) }}
{{- fail (printf "relay.tlsMode %q: want mtls or tls" .Values.relay.tlsMode) }}
{{- end }}
{{- if or (not .Values.relay.tokenSecret.name) (not .Values.relay.caSecret.name) }}
{{- fail "relay.tokenSecret.name and relay.caSecret.name are required (`meshrelay cluster register` creates them)" }}
{{- end }}
{{- if ne (toString .Values.kubernetes.maxDeleteFraction) "" }}
{{- $f := float64 .Values.kubernetes.maxDeleteFraction }}
{{- if or (lt $f 0.0) (gt $f 1.0) }}
{{- fail "kubernetes.maxDeleteFraction must be between 0 and 1" }}
{{- end }}
{{- end }}
{{- if lt (int .Values.kubernetes.deleteGuardMin) 0 }}
{{- fail "kubernetes.deleteGuardMin must be >= 0" }}
{{- end }}
{{- if not (has .Values.log.format (list "text" "json")) }}
{{- fail (printf "log.format %q: want text or json" .Values.log.format) }}
{{- end }}
{{- if and .Values.xds.enabled .Values.xds.service.enabled (not .Values.xds.service.gatewaySelector) }}
{{- fail "xds.service.gatewaySelector is required with xds.service.enabled: the labels of the gateway pods the NetworkPolicy admits to the xDS port (e.g. {app.kubernetes.io/name: meshrelay-gateway})" }}
{{- end }}
{{- end }}

{{/*
The arguments of `meshrelay agent`, one "--flag=value" per item. charts_test.go parses them
with the real command, so a flag the binary does not have fails the tests.
*/}}
{{- define "meshrelay-agent.args" -}}
- agent
- {{ printf "--cluster=%s" .Values.cluster | quote }}
- {{ printf "--relay-address=%s" .Values.relay.address | quote }}
{{- with .Values.relay.serverName }}
- {{ printf "--relay-server-name=%s" . | quote }}
{{- end }}
- {{ printf "--relay-tls-mode=%s" .Values.relay.tlsMode | quote }}
- {{ printf "--token-file=/etc/meshrelay/token/%s" .Values.relay.tokenSecret.key | quote }}
- {{ printf "--relay-ca-file=/etc/meshrelay/relay-ca/%s" .Values.relay.caSecret.key | quote }}
{{- with .Values.relay.resolveInterval }}
- {{ printf "--resolve-interval=%s" . | quote }}
{{- end }}
{{- with .Values.relay.maxBackoff }}
- {{ printf "--max-backoff=%s" . | quote }}
{{- end }}
- --state-dir=/var/lib/meshrelay/state
- {{ printf "--admin-address=:%d" (int .Values.admin.port) | quote }}
{{- if not .Values.xds.enabled }}
- --xds-address=
{{- else if .Values.xds.service.enabled }}
- {{ printf "--xds-address=:%d" (int .Values.xds.port) | quote }}
- --xds-tls
{{- else }}
- --xds-address=unix:///var/lib/meshrelay/state/xds.sock
{{- end }}
{{- if .Values.telemetryCollector.enabled }}
- --otlp-endpoint=127.0.0.1:4317
- --otlp-insecure
{{- end }}
- {{ printf "--log-level=%s" .Values.log.level | quote }}
- {{ printf "--log-format=%s" .Values.log.format | quote }}
{{- if .Values.kubernetes.enabled }}
- --kubernetes
{{- if .Values.kubernetes.kubeconfigSecret.name }}
- {{ printf "--kubeconfig=/etc/meshrelay/kubeconfig/%s" .Values.kubernetes.kubeconfigSecret.key | quote }}
{{- with .Values.kubernetes.kubeconfigSecret.context }}
- {{ printf "--kube-context=%s" . | quote }}
{{- end }}
{{- end }}
{{- with .Values.kubernetes.namespaces }}
- {{ printf "--kube-namespaces=%s" (join "," .) | quote }}
{{- end }}
{{- if ne (toString .Values.kubernetes.maxDeleteFraction) "" }}
- {{ printf "--max-delete-fraction=%v" .Values.kubernetes.maxDeleteFraction | quote }}
{{- end }}
{{- with int .Values.kubernetes.deleteGuardMin }}
- {{ printf "--delete-guard-min=%d" . | quote }}
{{- end }}
{{- with .Values.kubernetes.resync }}
- {{ printf "--kube-resync=%s" . | quote }}
{{- end }}
{{- else }}
- --discovery-dir=/etc/meshrelay/discovery
- --output-dir=/var/lib/meshrelay/output
{{- end }}
{{- if .Values.leaderElection }}
- --leader-election
- {{ printf "--leader-election-lease=%s/%s" .Release.Namespace (include "meshrelay-agent.fullname" .) | quote }}
{{- with .Values.leaseDuration }}
- {{ printf "--lease-duration=%s" . | quote }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The telemetry collector sidecar's configuration: the chart's receivers, processors and
pipelines, with telemetryCollector.config merged over them; the pipelines export to every
exporter given (one per telemetry gateway address).
*/}}
{{- define "meshrelay-agent.collectorConfig" -}}
{{- $user := deepCopy (.Values.telemetryCollector.config | default dict) }}
{{- $exporters := $user.exporters | default dict }}
{{- if not $exporters }}
{{- fail "telemetryCollector.config.exporters is required with telemetryCollector.enabled: one exporter per telemetry gateway address (otlp, otlp/2, …) with endpoint host:4317 and tls.ca_file" }}
{{- end }}
{{- range $name, $e := $exporters }}
{{- if not (and (kindIs "map" $e) (get $e "endpoint")) }}
{{- fail (printf "telemetryCollector.config.exporters.%s.endpoint is required: host:port of a telemetry gateway (default port 4317)" $name) }}
{{- end }}
{{- end }}
{{- $names := keys $exporters | sortAlpha }}
{{- $base := dict
  "receivers" (dict "otlp" (dict "protocols" (dict "grpc" (dict "endpoint" "127.0.0.1:4317"))))
  "processors" (dict "memory_limiter" (dict "check_interval" "1s" "limit_mib" 256 "spike_limit_mib" 64) "batch" (dict "timeout" "1s"))
  "service" (dict "telemetry" (dict "metrics" (dict "level" "none")) "pipelines" (dict
    "metrics" (dict "receivers" (list "otlp") "processors" (list "memory_limiter" "batch") "exporters" $names)
    "traces" (dict "receivers" (list "otlp") "processors" (list "memory_limiter" "batch") "exporters" $names))) }}
{{- toYaml (mustMergeOverwrite $base $user) }}
{{- end }}
