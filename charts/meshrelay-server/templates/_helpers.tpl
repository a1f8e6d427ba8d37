{{/* Name of the chart, overridable. */}}
{{- define "meshrelay-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the objects: <release>-<chart> unless the release already contains it. */}}
{{- define "meshrelay-server.fullname" -}}
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

{{- define "meshrelay-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "meshrelay-server.labels" -}}
helm.sh/chart: {{ include "meshrelay-server.chart" . }}
{{ include "meshrelay-server.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: meshrelay
app.kubernetes.io/component: management-server
{{- end }}

{{/* Labels that select the server's pods. */}}
{{- define "meshrelay-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshrelay-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshrelay-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meshrelay-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "meshrelay-server.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
"true" when the values give a shared Redis, in any mode (one server, Sentinel or Cluster).
*/}}
{{- define "meshrelay-server.redis" -}}
{{- if or .Values.redis.address .Values.redis.sentinel.addresses .Values.redis.cluster.addresses }}true{{ end }}
{{- end }}

{{/*
Refuse combinations the server would refuse at start (or that cannot work), with the value to
change, instead of a pod in CrashLoopBackOff.
*/}}
{{- define "meshrelay-server.validate" -}}
{{- $replicas := int .Values.replicas }}
{{- $modes := list }}
{{- if .Values.redis.address }}{{ $modes = append $modes "redis.address" }}{{ end }}
{{- if .Values.redis.sentinel.addresses }}{{ $modes = append $modes "redis.sentinel.addresses" }}{{ end }}
{{- if .Values.redis.cluster.addresses }}{{ $modes = append $modes "redis.cluster.addresses" }}{{ end }}
{{- if gt (len $modes) 1 }}
{{- fail (printf "%s exclude each other: set exactly one of redis.address (one server), redis.sentinel.addresses (Sentinel) and redis.cluster.addresses (Cluster)" (join " and " $modes)) }}
{{- end }}
{{- if and .Values.redis.sentinel.addresses (not .Values.redis.sentinel.masterName) }}
{{- fail "redis.sentinel.addresses needs redis.sentinel.masterName, the name the sentinels monitor the primary under" }}
{{- end }}
{{- if and .Values.redis.sentinel.masterName (not .Values.redis.sentinel.addresses) }}
{{- fail "redis.sentinel.masterName needs redis.sentinel.addresses" }}
{{- end }}
{{- if and .Values.redis.sentinel.passwordSecret.name (not .Values.redis.sentinel.addresses) }}
{{- fail "redis.sentinel.passwordSecret needs redis.sentinel.addresses" }}
{{- end }}
{{- $redis := include "meshrelay-server.redis" . }}
{{- if lt $replicas 1 }}
{{- fail "replicas must be at least 1" }}
{{- end }}
{{- if and (gt $replicas 1) (not $redis) }}
{{- fail "replicas > 1 needs a shared store: set redis.address (or redis.sentinel.addresses or redis.cluster.addresses; each replica would otherwise keep its own store)" }}
{{- end }}
{{- if and (gt $replicas 1) (not .Values.leaderElection) }}
{{- fail "replicas > 1 needs leaderElection: true (exactly one replica may issue mesh certificates and delete outputs)" }}
{{- end }}
{{- if and (or .Values.leaderElection .Values.enableClusterLoadBalancing .Values.mgmtClusterName) (not $redis) }}
{{- fail "leaderElection, enableClusterLoadBalancing and mgmtClusterName need a shared store: set redis.address (or redis.sentinel.addresses or redis.cluster.addresses)" }}
{{- end }}
{{- if and .Values.safeMode (gt (int .Values.safeStartWindow) 0) }}
{{- fail "safeStartWindow takes effect only with safeMode: false" }}
{{- end }}
{{- if lt (int .Values.safeStartWindow) 0 }}
{{- fail "safeStartWindow must be >= 0" }}
{{- end }}
{{- if not (has .Values.relay.tlsMode (list "mtls" "tls")) }}
{{- fail (printf "relay.tlsMode %q: want mtls or tls" .Values.relay.tlsMode) }}
{{- end }}
{{- if and (gt $replicas 1) (or (not .Values.relay.ca.secretName) (not .Values.meshCA.secretName)) }}
{{- fail "replicas > 1 must share one relay CA and one mesh CA: set relay.ca.secretName and meshCA.secretName" }}
{{- end }}
{{- if and .Values.redis.tls.enabled (not $redis) }}
{{- fail "redis.tls.enabled needs redis.address (or redis.sentinel.addresses or redis.cluster.addresses)" }}
{{- end }}
{{- if not (has .Values.log.format (list "text" "json")) }}
{{- fail (printf "log.format %q: want text or json" .Values.log.format) }}
{{- end }}
{{- end }}

{{/*
Names the server's generated serving certificates (relay and admin API) must carry: the
in-cluster names of the relay Service and, when rendered, of the admin Service.
*/}}
{{- define "meshrelay-server.serverNames" -}}
{{- $ns := .Release.Namespace }}
{{- $names := list }}
{{- $services := list (include "meshrelay-server.fullname" .) }}
{{- if .Values.admin.service.enabled }}
{{- $services = append $services (printf "%s-admin" (include "meshrelay-server.fullname" .)) }}
{{- end }}
{{- range $svc := $services }}
{{- $names = concat $names (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $.Values.clusterDomain)) }}
{{- end }}
{{- concat $names .Values.relay.serverNames | uniq | join "," }}
{{- end }}

{{/*
The arguments of `meshrelay server`, one "--flag=value" per item. charts_test.go parses them
with the real command, so a flag the binary does not have fails the tests.
*/}}
{{- define "meshrelay-server.args" -}}
- server
- {{ printf "--relay-address=:%d" (int .Values.relay.port) | quote }}
- {{ printf "--admin-address=:%d" (int .Values.admin.port) | quote }}
- --data-dir=/var/lib/meshrelay
- {{ printf "--log-level=%s" .Values.log.level | quote }}
- {{ printf "--log-format=%s" .Values.log.format | quote }}
- {{ printf "--trust-domain=%s" .Values.trustDomain | quote }}
- {{ printf "--relay-tls-mode=%s" .Values.relay.tlsMode | quote }}
- --replica-id=$(POD_NAME)
- {{ printf "--advertise-address=%s" (.Values.relay.advertiseAddress | default (printf "$(POD_IP):%d" (int .Values.relay.port))) | quote }}
- {{ printf "--token-file=/etc/meshrelay/token/%s" .Values.relay.token.secretKey | quote }}
- {{ printf "--admin-token-file=/etc/meshrelay/admin-token/%s" .Values.admin.token.secretKey | quote }}
{{- if .Values.relay.ca.secretName }}
- --relay-ca-cert=/etc/meshrelay/relay-ca/tls.crt
- --relay-ca-key=/etc/meshrelay/relay-ca/tls.key
{{- end }}
{{- if .Values.relay.serverCertSecretName }}
- --relay-server-cert=/etc/meshrelay/relay-server/tls.crt
- --relay-server-key=/etc/meshrelay/relay-server/tls.key
{{- end }}
{{- if .Values.admin.serverCertSecretName }}
- --admin-tls-cert-file=/etc/meshrelay/admin-server/tls.crt
- --admin-tls-key-file=/etc/meshrelay/admin-server/tls.key
{{- end }}
{{- if not (and .Values.relay.serverCertSecretName .Values.admin.serverCertSecretName) }}
- {{ printf "--relay-server-names=%s" (include "meshrelay-server.serverNames" .) | quote }}
{{- end }}
{{- with .Values.relay.agentCertTTL }}
- {{ printf "--agent-cert-ttl=%s" . | quote }}
{{- end }}
{{- if .Values.meshCA.secretName }}
- --mesh-ca-cert=/etc/meshrelay/mesh-ca/tls.crt
- --mesh-ca-key=/etc/meshrelay/mesh-ca/tls.key
{{- end }}
{{- with .Values.meshCA.certTTL }}
- {{ printf "--mesh-cert-ttl=%s" . | quote }}
{{- end }}
{{- if .Values.config.configMap }}
- --config-dir=/etc/meshrelay/config
{{- end }}
{{- if include "meshrelay-server.redis" . }}
{{- with .Values.redis.address }}
- {{ printf "--redis-address=%s" . | quote }}
{{- end }}
{{- with .Values.redis.sentinel.addresses }}
- {{ printf "--redis-sentinel-addresses=%s" (join "," .) | quote }}
- {{ printf "--redis-master-name=%s" $.Values.redis.sentinel.masterName | quote }}
{{- end }}
{{- with .Values.redis.cluster.addresses }}
- {{ printf "--redis-cluster-addresses=%s" (join "," .) | quote }}
{{- end }}
{{- with .Values.redis.prefix }}
- {{ printf "--redis-prefix=%s" . | quote }}
{{- end }}
{{- if .Values.redis.tls.enabled }}
- --redis-tls
{{- if .Values.redis.tls.caSecret.name }}
- {{ printf "--redis-tls-ca-file=/etc/meshrelay/redis-ca/%s" .Values.redis.tls.caSecret.key | quote }}
{{- end }}
{{- with .Values.redis.tls.serverName }}
- {{ printf "--redis-tls-server-name=%s" . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.mgmtClusterName }}
- {{ printf "--mgmt-cluster-name=%s" . | quote }}
{{- end }}
{{- if .Values.leaderElection }}
- --leader-election
{{- with .Values.leaseDuration }}
- {{ printf "--lease-duration=%s" . | quote }}
{{- end }}
{{- end }}
{{- if .Values.enableClusterLoadBalancing }}
- --cluster-load-balancing
{{- end }}
- {{ printf "--safe-mode=%v" .Values.safeMode | quote }}
{{- if and (not .Values.safeMode) (gt (int .Values.safeStartWindow) 0) }}
- {{ printf "--safe-start-window=%d" (int .Values.safeStartWindow) | quote }}
{{- end }}
{{- if .Values.kubernetes.enabled }}
- --kubernetes
{{- if .Values.kubernetes.kubeconfigSecret.name }}
- {{ printf "--kubeconfig=/etc/meshrelay/kubeconfig/%s" .Values.kubernetes.kubeconfigSecret.key | quote }}
{{- end }}
{{- end }}
{{- if .Values.telemetryGateway.enabled }}
- {{ printf "--telemetry-prometheus-url=http://%s.%s.svc:%d/metrics" (include "meshrelay-server.telemetryGatewayName" .) .Release.Namespace (int .Values.telemetryGateway.prometheusPort) | quote }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
A Secret with a random token under token.secretKey, created once: lookup keeps the existing
value on upgrades. Arguments: root (the chart's context), token (relay.token or admin.token),
role (the meshrelay.io/secret label).
*/}}
{{- define "meshrelay-server.tokenSecret" -}}
{{- $root := .root }}
{{- $name := .token.secretName }}
{{- $key := .token.secretKey }}
{{- $old := get (lookup "v1" "Secret" $root.Release.Namespace $name) "data" | default dict }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "meshrelay-server.labels" $root | nindent 4 }}
    meshrelay.io/secret: {{ .role }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  {{- if hasKey $old $key }}
  {{ $key }}: {{ index $old $key }}
  {{- else }}
  {{ $key }}: {{ randAlphaNum 64 | b64enc }}
  {{- end }}
{{- end }}

{{/*
Labels that select the telemetry gateway's pods: a name of its own, so that the server's
Service, PodDisruptionBudget, NetworkPolicy and ServiceMonitor never select them.
*/}}
{{- define "meshrelay-server.telemetryGatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "meshrelay-server.name" . }}-telemetry-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the telemetry gateway's objects (its Service among them). */}}
{{- define "meshrelay-server.telemetryGatewayName" -}}
{{- printf "%s-telemetry-gateway" (include "meshrelay-server.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of the telemetry gateway's objects. */}}
{{- define "meshrelay-server.telemetryGatewayLabels" -}}
helm.sh/chart: {{ include "meshrelay-server.chart" . }}
{{ include "meshrelay-server.telemetryGatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.telemetryGateway.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: meshrelay
app.kubernetes.io/component: telemetry-gateway
{{- end }}
