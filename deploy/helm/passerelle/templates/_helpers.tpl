{{- define "passerelle.fullname" -}}
passerelle-{{ .Values.institution }}
{{- end -}}

{{- define "passerelle.selectorLabels" -}}
app.kubernetes.io/name: passerelle
app.kubernetes.io/instance: {{ .Release.Name }}
passerelle.institution: {{ .Values.institution }}
{{- end -}}

{{- define "passerelle.labels" -}}
{{ include "passerelle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* The institutions this one calls. */}}
{{- define "passerelle.targets" -}}
{{- if eq .Values.institution "emploi" -}}social{{- else if eq .Values.institution "social" -}}emploi{{- else -}}emploi social{{- end -}}
{{- end -}}
