{{/*
Names and labels. Every template here takes the chart's root context (., or
.Subcharts.infermeter from a parent chart), so they resolve this chart's values and appVersion.
*/}}
{{- define "infermeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "infermeter.fullname" -}}
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

{{- define "infermeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infermeter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "infermeter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "infermeter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "infermeter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The proxy is on in every mode but daemonset. */}}
{{- define "infermeter.proxyEnabled" -}}
{{- if ne .Values.mode "daemonset" }}true{{ end }}
{{- end }}

{{- define "infermeter.upstream" -}}
{{- default (printf "http://127.0.0.1:%v" .Values.server.port) .Values.sidecar.upstream }}
{{- end }}

{{- define "infermeter.terminationGracePeriodSeconds" -}}
{{- $minimum := add (int .Values.preStopSleepSeconds) (int (ceil .Values.sidecar.drainTimeout)) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $minimum 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $minimum }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than preStopSleepSeconds + sidecar.drainTimeout (%v): the kubelet would kill requests still draining" .Values.terminationGracePeriodSeconds $minimum) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Checks the schema cannot express (they compare values or need the cluster's version). */}}
{{- define "infermeter.validate" -}}
{{- $r := .Values.sidecar.resources | default dict }}
{{- range $part := list "requests" "limits" }}
{{- if hasKey (get $r $part | default dict) "nvidia.com/gpu" }}
{{- fail (printf "sidecar.resources.%s must not request nvidia.com/gpu: that would claim a GPU of its own; infermeter reads the server's GPUs through sidecar.gpu.visibleDevices" $part) }}
{{- end }}
{{- end }}
{{- if and .Values.sidecar.native (ne .Values.mode "daemonset") (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "sidecar.native needs Kubernetes 1.29 or later (native sidecar containers); this cluster is %s: set sidecar.native=false" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and .Values.monitor.enabled (eq .Values.monitor.kind "ServiceMonitor") (not .Values.service.enabled) (ne .Values.mode "none") }}
{{- fail "monitor.kind=ServiceMonitor scrapes the Service's metrics port: set service.enabled=true or monitor.kind=PodMonitor" }}
{{- end }}
{{- end }}

{{/* Non-empty when the DaemonSet asks the kubelet which pod holds which GPU. */}}
{{- define "infermeter.podAttribution" -}}
{{- if and (eq .Values.mode "daemonset") .Values.podAttribution.enabled .Values.sidecar.gpu.metrics }}true{{ end }}
{{- end }}

{{/* `infermeter serve` flags. */}}
{{- define "infermeter.args" -}}
- serve
- --metrics-listen=0.0.0.0:{{ .Values.sidecar.ports.metrics.containerPort }}
{{- if include "infermeter.proxyEnabled" . }}
- --listen=0.0.0.0:{{ .Values.sidecar.ports.proxy.containerPort }}
- --upstream={{ include "infermeter.upstream" . }}
- --drain-timeout={{ .Values.sidecar.drainTimeout }}
- --workers={{ .Values.sidecar.workers }}
{{- end }}
- --log-format={{ .Values.sidecar.logFormat }}
- --log-level={{ .Values.sidecar.logLevel }}
{{- if .Values.sidecar.gpu.metrics }}
- --gpu-poll-interval={{ .Values.sidecar.gpu.pollInterval }}
{{- with .Values.sidecar.gpu.ids }}
- --gpus={{ join "," . }}
{{- end }}
{{- if .Values.sidecar.gpu.dcgmCompat }}
- --dcgm-compat
{{- end }}
{{- else }}
- --no-gpu-metrics
{{- end }}
{{- if include "infermeter.podAttribution" . }}
- --kubelet-pod-resources={{ .Values.podAttribution.hostPath }}/kubelet.sock
- --kubelet-pod-resources-interval={{ .Values.podAttribution.interval }}
{{- else if eq .Values.mode "daemonset" }}
- --kubelet-pod-resources=off
{{- end }}
{{- if and .Values.sidecar.watchProcess (ne .Values.mode "daemonset") }}
- --watch-process={{ .Values.sidecar.watchProcess }}
{{- end }}
{{- if include "infermeter.proxyEnabled" . }}
{{- range $label, $header := .Values.sidecar.attributes }}
- --attribute={{ $label }}={{ $header }}
{{- end }}
{{- if .Values.sidecar.attributes }}
- --max-attribute-values={{ .Values.sidecar.maxAttributeValues }}
{{- if .Values.sidecar.stripAttributeHeaders }}
- --strip-attribute-headers
{{- end }}
{{- end }}
{{- if and .Values.sidecar.prices (eq .Values.mode "sidecar") }}
- --prices=/etc/infermeter/prices/prices.yaml
{{- end }}
{{- end }}
{{- range .Values.sidecar.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The prices ConfigMap's name (sidecar.prices). */}}
{{- define "infermeter.pricesName" -}}
{{ include "infermeter.fullname" . }}-prices
{{- end }}

{{/*
The infermeter container, as one list item. Mode sidecar uses it, and so can your own chart:
with this chart as a dependency (mode: none),

  initContainers:            # sidecar.native=true (Kubernetes 1.29+); else under containers:
    {{- include "infermeter.sidecarContainer" .Subcharts.infermeter | nindent 4 }}

It never requests nvidia.com/gpu.
*/}}
{{- define "infermeter.sidecarContainer" -}}
{{- include "infermeter.validate" . -}}
- name: infermeter
  image: {{ include "infermeter.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if and .Values.sidecar.native (ne .Values.mode "daemonset") }}
  restartPolicy: Always
  {{- end }}
  args:
    {{- include "infermeter.args" . | nindent 4 }}
  {{- if or .Values.sidecar.gpu.visibleDevices .Values.sidecar.env (eq .Values.mode "daemonset") }}
  env:
    {{- with .Values.sidecar.gpu.visibleDevices }}
    - name: NVIDIA_VISIBLE_DEVICES
      value: {{ . | quote }}
    {{- end }}
    {{- if eq .Values.mode "daemonset" }}
    # the node's name: the Hostname label of --dcgm-compat, as dcgm-exporter sets it
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    {{- end }}
    {{- with .Values.sidecar.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with .Values.sidecar.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    {{- if include "infermeter.proxyEnabled" . }}
    - name: {{ .Values.sidecar.ports.proxy.name }}
      containerPort: {{ .Values.sidecar.ports.proxy.containerPort }}
      protocol: TCP
    {{- end }}
    - name: {{ .Values.sidecar.ports.metrics.name }}
      containerPort: {{ .Values.sidecar.ports.metrics.containerPort }}
      protocol: TCP
  {{- with .Values.sidecar.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.sidecar.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.sidecar.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (not .Values.sidecar.native) (ne .Values.mode "daemonset") (gt (int .Values.preStopSleepSeconds) 0) }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ .Values.preStopSleepSeconds }}"]
  {{- end }}
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  securityContext:
    {{- if include "infermeter.podAttribution" . }}
    {{- /* The kubelet's socket is root's, mode 0755 (srwxr-xr-x): only UID 0 may connect. */}}
    {{- $security := deepCopy .Values.sidecar.securityContext }}
    {{- $_ := set $security "runAsNonRoot" false }}
    {{- $_ = set $security "runAsUser" 0 }}
    {{- $_ = set $security "runAsGroup" 0 }}
    {{- toYaml $security | nindent 4 }}
    {{- else }}
    {{- toYaml .Values.sidecar.securityContext | nindent 4 }}
    {{- end }}
  {{- $prices := and .Values.sidecar.prices (eq .Values.mode "sidecar") }}
  {{- if or .Values.sidecar.extraVolumeMounts $prices (include "infermeter.podAttribution" .) }}
  volumeMounts:
    {{- if include "infermeter.podAttribution" . }}
    - name: pod-resources
      mountPath: {{ .Values.podAttribution.hostPath }}
      readOnly: true
    {{- end }}
    {{- if $prices }}
    - name: infermeter-prices
      mountPath: /etc/infermeter/prices
      readOnly: true
    {{- end }}
    {{- with .Values.sidecar.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* The inference server container of mode sidecar. */}}
{{- define "infermeter.serverContainer" -}}
- name: {{ .Values.server.name }}
  image: "{{ .Values.server.image.repository }}:{{ .Values.server.image.tag }}"
  imagePullPolicy: {{ .Values.server.image.pullPolicy }}
  {{- with .Values.server.command }}
  command:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.server.args }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.server.env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.server.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: http
      containerPort: {{ .Values.server.port }}
      protocol: TCP
  {{- with .Values.server.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.server.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.server.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if gt (int .Values.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ .Values.preStopSleepSeconds }}"]
  {{- end }}
  {{- with .Values.server.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.server.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if or .Values.server.shm.enabled .Values.server.extraVolumeMounts }}
  volumeMounts:
    {{- if .Values.server.shm.enabled }}
    - name: dshm
      mountPath: /dev/shm
    {{- end }}
    {{- with .Values.server.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* Pod-level fields shared by the Deployment and the DaemonSet. */}}
{{- define "infermeter.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
enableServiceLinks: {{ .Values.enableServiceLinks }}
terminationGracePeriodSeconds: {{ include "infermeter.terminationGracePeriodSeconds" . }}
{{- with .Values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "infermeter.podLabels" -}}
{{ include "infermeter.labels" . }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
