{{/* Labels on every object's metadata (not on selectors or pod templates,
     which stay as in deploy/base so the two render the same pods). */}}
{{- define "castellan.labels" -}}
app.kubernetes.io/part-of: castellan
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* castellan.image renders "<registry>/<name>:<tag>"; call with
     (dict "root" $ "name" "castellan-server"). */}}
{{- define "castellan.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .name $tag -}}
{{- end }}

{{/* castellan.datastore fails the render for a datastore the server does
     not have yet, so the error comes at install time, not at run time. */}}
{{- define "castellan.datastore" -}}
{{- if ne .Values.datastore.type "bbolt" -}}
{{- fail (printf "datastore.type=%s is not yet supported by castellan-server %s; use datastore.type=bbolt (one replica, a PersistentVolumeClaim)" .Values.datastore.type .Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{- define "castellan.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
