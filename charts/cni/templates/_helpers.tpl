{{/* cni.init runs at the top of every template: it fails on an unknown profile. */}}
{{- define "cni.init" -}}
{{- $profile := coalesce .Values.profile (.Values.global).profile | default "" -}}
{{- if not (has $profile (list "" "ambient")) -}}
{{- fail (printf "unknown profile %q: this mesh runs ambient mode only; set profile=ambient or leave it unset" $profile) -}}
{{- end -}}
{{- end -}}

{{- define "cni.labels" -}}
app: istio-cni-node
k8s-app: istio-cni-node
app.kubernetes.io/name: istio-cni
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: istio
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Cluster-scoped objects carry the namespace, so installs in two namespaces do not collide. */}}
{{- define "cni.clusterName" -}}
istio-cni-{{ .Release.Namespace }}
{{- end -}}

{{- define "cni.image" -}}
{{- if contains "/" (toString .Values.image) -}}
{{- .Values.image -}}
{{- else -}}
{{- printf "%s/%s:%s" (toString (.Values.hub | default .Values.global.hub)) (toString .Values.image) (toString (.Values.tag | default .Values.global.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "cni.redirectMode" -}}
{{- $mode := toString .Values.ambient.redirectMode -}}
{{- if not (has $mode (list "auto" "ebpf" "nftables")) -}}
{{- fail (printf "ambient.redirectMode %q: want auto, ebpf or nftables" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end -}}

{{/* cni.repair maps Istio's repair values to the agent's -repair mode. */}}
{{- define "cni.repair" -}}
{{- $r := .Values.repair -}}
{{- if not $r.enabled -}}
{{- fail "repair.enabled=false is not supported: the agent always acts on pods that should be in the mesh and are not; choose repair.repairPods (capture in place, the default), repair.labelPods or repair.deletePods" -}}
{{- else if and $r.deletePods $r.labelPods -}}
{{- fail "repair.deletePods and repair.labelPods are both set: choose one" -}}
{{- else if $r.deletePods -}}
delete
{{- else if $r.labelPods -}}
label
{{- else if $r.repairPods -}}
capture
{{- else -}}
{{- fail "repair: set one of repairPods (capture in place), labelPods or deletePods" -}}
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
