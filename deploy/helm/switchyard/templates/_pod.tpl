{{/* The pod template both workloads share (a StatefulSet in embedded mode, a Deployment in kafka mode). */}}
{{- define "switchyard.podTemplate" -}}
metadata:
  labels:
    {{- include "switchyard.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed configuration rolls the pods.
    checksum/config: {{ include "switchyard.configToml" . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "switchyard.serviceAccountName" . }}
  automountServiceAccountToken: {{ or .Values.serviceAccount.automountServiceAccountToken .Values.kubernetes.enabled }}
  # No SWITCHYARD_PORT, SWITCHYARD_SERVICE_HOST… variables from the Service named switchyard: the
  # server reads SWITCHYARD_* variables as configuration.
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # Above the server's drain: preStopSleepSeconds + config.shutdown_grace_secs + terminationGraceExtraSeconds.
  terminationGracePeriodSeconds: {{ include "switchyard.terminationGracePeriodSeconds" . }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: switchyard
      image: {{ include "switchyard.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      # Flags override the image's SWITCHYARD_LISTEN / SWITCHYARD_DATA_DIR / SWITCHYARD_LOG_FORMAT.
      args:
        - serve
        - --config
        - /etc/switchyard/switchyard.toml
        - --listen
        - 0.0.0.0:8080
        - --data-dir
        - /data
        - --log-format
        - {{ .Values.logFormat }}
        {{- if and .Values.auth.allowUnauthenticated (not .Values.auth.tokensSecret) }}
        - --allow-unauthenticated
        {{- end }}
      {{- if or .Values.logLevel .Values.extraEnv .Values.auth.tokensSecret }}
      env:
        {{- with .Values.logLevel }}
        - name: SWITCHYARD_LOG
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.auth.tokensSecret }}
        - name: SWITCHYARD_AUTH_TOKENS
          valueFrom:
            secretKeyRef:
              name: {{ . | quote }}
              key: tokens
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      {{- if gt (int64 .Values.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ int64 .Values.preStopSleepSeconds }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: /data
        - name: config
          mountPath: /etc/switchyard
          readOnly: true
        # The root filesystem is read-only: a writable /tmp for anything a library puts there.
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: config
      configMap:
        name: {{ include "switchyard.fullname" . }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if eq .Values.mode "kafka" }}
    # Kafka keeps the log, the offsets and the declarations: a node's data directory holds nothing durable.
    - name: data
      emptyDir:
        sizeLimit: 1Gi
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
