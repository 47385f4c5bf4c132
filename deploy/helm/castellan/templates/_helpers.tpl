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

{{/* castellan.datastore fails the render for a datastore setting the
     server cannot run with, so the error comes at install time, not as a
     crash loop. values.schema.json refuses the same values; this holds
     with --skip-schema-validation too. */}}
{{- define "castellan.datastore" -}}
{{- $ds := .Values.datastore -}}
{{- $replicas := int .Values.server.replicas -}}
{{- if lt $replicas 1 -}}
{{- fail (printf "server.replicas=%d: the CA needs at least one replica" $replicas) -}}
{{- end -}}
{{- if eq $ds.type "bbolt" -}}
{{- if gt $replicas 1 -}}
{{- fail (printf "server.replicas=%d needs datastore.type=postgres: the bbolt datastore is one file on one volume that one process owns, so a bbolt CA runs exactly one replica; share a PostgreSQL database between replicas instead (datastore.postgres, see deploy/README.md)" $replicas) -}}
{{- end -}}
{{- else if eq $ds.type "postgres" -}}
{{- if not (and $ds.postgres $ds.postgres.dsnSecret $ds.postgres.dsnSecret.name $ds.postgres.dsnSecret.key) -}}
{{- fail "datastore.type=postgres needs datastore.postgres.dsnSecret.name and .key: the Secret holding the DSN (postgres://...)" -}}
{{- end -}}
{{- if not (and $ds.postgres.ledgerKeySecret $ds.postgres.ledgerKeySecret.name $ds.postgres.ledgerKeySecret.key) -}}
{{- fail "datastore.type=postgres needs datastore.postgres.ledgerKeySecret.name and .key: the Secret holding the log's signing key (castellanctl ledger keygen), shared by every replica" -}}
{{- end -}}
{{- $kek := .Values.server.kekSecret -}}
{{- if and (not .Values.server.pluginCA.enabled) (not (and $kek $kek.name $kek.key)) -}}
{{- fail "datastore.type=postgres with server.pluginCA.enabled=false needs server.kekSecret.name and .key: the Secret holding the key-encryption key that seals the self-managed CA's keys in the shared authority journal, the same for every replica (32 bytes, e.g. head -c 32 /dev/urandom | base64)" -}}
{{- end -}}
{{- else -}}
{{- fail (printf "datastore.type=%s is unknown; use bbolt (one replica) or postgres" $ds.type) -}}
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
