{{/*
mesh.profile fails on a profile this mesh does not have. It runs ambient
mode only: the profile "ambient" (Istio's install commands set it) and no
profile at all mean the same.
*/}}
{{- define "mesh.profile" -}}
{{- $profile := coalesce .Values.profile (.Values.global).profile | default "" -}}
{{- if not (has $profile (list "" "ambient")) -}}
{{- fail (printf "unknown profile %q: this mesh runs ambient mode only; set profile=ambient or leave it unset" $profile) -}}
{{- end -}}
{{- end -}}
