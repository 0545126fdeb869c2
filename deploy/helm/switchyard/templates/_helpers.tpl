{{/* The chart's name, overridable. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: objects are named after it. */}}
{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: broker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The server's drain grace after SIGTERM (config.shutdown_grace_secs; the server's default is 10). */}}
{{- define "switchyard.shutdownGrace" -}}
{{- if hasKey .Values.config "shutdown_grace_secs" -}}
{{- int64 .Values.config.shutdown_grace_secs -}}
{{- else -}}
10
{{- end -}}
{{- end -}}

{{/* Seconds between SIGTERM (or the preStop hook) and SIGKILL: above the server's drain grace. */}}
{{- define "switchyard.terminationGracePeriodSeconds" -}}
{{- $grace := int64 (include "switchyard.shutdownGrace" .) -}}
{{- add (int64 .Values.preStopSleepSeconds) $grace (int64 .Values.terminationGraceExtraSeconds) -}}
{{- end -}}

{{/*
One TOML value. Helm reads numbers from YAML as floats: Switchyard's keys are whole numbers,
strings and booleans, so a number is written as an integer (the schema rejects fractions).
*/}}
{{- define "switchyard.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{- int64 . -}}
{{- else -}}
{{- fail (printf "config: %v is not a string, a whole number or a boolean" .) -}}
{{- end -}}
{{- end -}}

{{/* The configuration file: .Values.config plus the keys the chart owns. */}}
{{- define "switchyard.configToml" -}}
{{- range $key := list "listen" "data_dir" "log" "kafka" "kubernetes" -}}
{{- if hasKey $.Values.config $key -}}
{{- fail (printf "config.%s is set by the chart (from mode, kafka.*, kubernetes.* and the container's flags): remove it" $key) -}}
{{- end -}}
{{- end -}}
{{- $config := deepCopy .Values.config -}}
{{- if eq .Values.mode "kafka" -}}
{{- if not .Values.kafka.bootstrapServers -}}
{{- fail "mode kafka needs kafka.bootstrapServers (host:port of the cluster's brokers)" -}}
{{- end -}}
{{- $_ := set $config "log" (printf "kafka://%s" (join "," .Values.kafka.bootstrapServers)) -}}
{{- $_ := set $config "kafka" (dict "topic_prefix" .Values.kafka.topicPrefix "partitions" .Values.kafka.partitions "replication_factor" .Values.kafka.replicationFactor) -}}
{{- else -}}
{{- $_ := set $config "log" "embedded" -}}
{{- end -}}
{{- if .Values.kubernetes.enabled -}}
{{- $advertised := .Values.kubernetes.advertisedUrl | default (printf "http://%s.%s.svc.cluster.local:%v" (include "switchyard.fullname" .) .Release.Namespace .Values.service.port) -}}
{{- $_ := set $config "kubernetes" (dict "in_cluster" true "broker_class" .Values.kubernetes.brokerClass "advertised_url" $advertised) -}}
{{- end -}}
# Written by the switchyard Helm chart (values: config, mode, kafka). `listen` and `data_dir`
# come from the container's flags (--listen 0.0.0.0:8080 --data-dir /data).
{{- range $key, $value := $config }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ include "switchyard.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $table, $values := $config }}
{{- if kindIs "map" $values }}
[{{ $table }}]
{{- range $key, $value := $values }}
{{ $key }} = {{ include "switchyard.tomlValue" $value }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
