{{/*
istiod.init runs at the top of every template: it fails on an unknown
profile and copies the Istio-style `pilot.` values over the top-level ones
(idempotent, so running it once per template is harmless).
*/}}
{{- define "istiod.init" -}}
{{- $profile := coalesce .Values.profile (.Values.global).profile | default "" -}}
{{- if not (has $profile (list "" "ambient")) -}}
{{- fail (printf "unknown profile %q: this mesh runs ambient mode only; set profile=ambient or leave it unset" $profile) -}}
{{- end -}}
{{- with .Values.pilot -}}
{{- $_ := mustMergeOverwrite $.Values (deepCopy .) -}}
{{- end -}}
{{- end -}}

{{- define "istiod.labels" -}}
app: istiod
istio: pilot
app.kubernetes.io/name: istiod
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: istio
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "istiod.selectorLabels" -}}
app: istiod
istio: pilot
{{- end -}}

{{/* Cluster-scoped objects carry the namespace, so installs in two namespaces do not collide. */}}
{{- define "istiod.clusterName" -}}
istiod-clusterrole-{{ .Release.Namespace }}
{{- end -}}

{{- define "istiod.image" -}}
{{- if contains "/" (toString .Values.image) -}}
{{- .Values.image -}}
{{- else -}}
{{- printf "%s/%s:%s" (toString (.Values.hub | default .Values.global.hub)) (toString .Values.image) (toString (.Values.tag | default .Values.global.tag)) -}}
{{- end -}}
{{- end -}}

{{/* mesh.logLevel turns Istio's "<scope>:<level>,..." into one of our levels. */}}
{{- define "mesh.logLevel" -}}
{{- $level := "" -}}
{{- range splitList "," (toString .) -}}
{{- $parts := splitList ":" (trim .) -}}
{{- if eq (len $parts) 1 -}}
{{- $level = index $parts 0 -}}
{{- else if eq (index $parts 0) "default" -}}
{{- $level = index $parts 1 -}}
{{- end -}}
{{- end -}}
{{- $level = $level | default "info" | lower -}}
{{- if eq $level "warning" }}{{ $level = "warn" }}{{ end -}}
{{- if not (has $level (list "debug" "info" "warn" "error")) -}}
{{- fail (printf "log level %q: want debug, info, warn or error" $level) -}}
{{- end -}}
{{- $level -}}
{{- end -}}
