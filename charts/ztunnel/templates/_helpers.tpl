{{/* ztunnel.init runs at the top of every template: it fails on an unknown profile. */}}
{{- define "ztunnel.init" -}}
{{- $profile := coalesce .Values.profile (.Values.global).profile | default "" -}}
{{- if not (has $profile (list "" "ambient")) -}}
{{- fail (printf "unknown profile %q: this mesh runs ambient mode only; set profile=ambient or leave it unset" $profile) -}}
{{- end -}}
{{- if not (has (toString .Values.logLevel) (list "debug" "info" "warn" "error")) -}}
{{- fail (printf "logLevel %q: want debug, info, warn or error" (toString .Values.logLevel)) -}}
{{- end -}}
{{- end -}}

{{- define "ztunnel.labels" -}}
app: ztunnel
app.kubernetes.io/name: ztunnel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: istio
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ztunnel.image" -}}
{{- if contains "/" (toString .Values.image) -}}
{{- .Values.image -}}
{{- else -}}
{{- printf "%s/%s:%s" (toString (.Values.hub | default .Values.global.hub)) (toString .Values.image) (toString (.Values.tag | default .Values.global.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "ztunnel.xdsAddress" -}}
{{- .Values.xdsAddress | default (printf "istiod.%s.svc:15012" .Values.istioNamespace) -}}
{{- end -}}
