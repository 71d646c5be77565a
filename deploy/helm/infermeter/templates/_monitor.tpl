{{/* Scrape settings shared by the PodMonitor and the ServiceMonitor endpoint. */}}
{{- define "infermeter.endpoint" -}}
path: /metrics
{{- with .Values.monitor.interval }}
interval: {{ . }}
{{- end }}
{{- with .Values.monitor.scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
honorLabels: {{ .Values.monitor.honorLabels }}
{{- if or .Values.monitor.nodeLabel .Values.monitor.relabelings }}
relabelings:
  {{- if .Values.monitor.nodeLabel }}
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
    action: replace
  {{- end }}
  {{- with .Values.monitor.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- with .Values.monitor.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.monitor.endpointExtra }}
{{ toYaml . }}
{{- end }}
{{- end }}
