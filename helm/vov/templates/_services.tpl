{{/* The vov services' containers: environment, TLS files, probes, drain and grace. */}}

{{/* The Secret that holds the TLS files of a vov service */}}
{{- define "vov.tlsSecret" -}}
{{- default (printf "%s-tls" (include "vov.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "vov.tritonTLSSecret" -}}
{{- default (printf "%s-triton-tls" (include "vov.fullname" .)) .Values.tls.triton.secretName -}}
{{- end -}}

{{/* The decoder's client certificate for Triton (mutual TLS) */}}
{{- define "vov.tritonClientTLSSecret" -}}
{{- default (printf "%s-triton-client-tls" (include "vov.fullname" .)) .Values.tls.triton.clientSecretName -}}
{{- end -}}

{{/*
Environment of both vov services: listen address, logs, grace, metrics, TLS and request limits.
args: dict "root" $ "prefix" "VOV_ENCODER" "values" .Values.encoder
*/}}
{{- define "vov.serviceEnv" -}}
{{- $root := .root -}}
{{- $v := .values -}}
- name: {{ .prefix }}_HOST
  value: {{ $root.Values.listenHost | quote }}
- name: {{ .prefix }}_PORT
  value: {{ $v.port | int64 | quote }}
- name: {{ .prefix }}_WORKERS
  value: {{ $v.workers | int64 | quote }}
{{ include "vov.modelEnv" $root }}
- name: VOV_GRACE_SECONDS
  value: {{ $v.graceSeconds | int64 | quote }}
- name: VOV_TORCH_THREADS
{{- include "vov.threads" (dict "threads" $v.torchThreads "container" .container) }}
- name: VOV_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
- name: VOV_METRICS_PORT
  value: {{ ternary $root.Values.metrics.port 0 $root.Values.metrics.enabled | int64 | quote }}
{{- if $root.Values.tls.enabled }}
- name: VOV_TLS_CERT
  value: /etc/vov/tls/tls.crt
- name: VOV_TLS_KEY
  value: /etc/vov/tls/tls.key
{{- if $root.Values.tls.clientCASecretName }}
- name: VOV_TLS_CLIENT_CA
  value: /etc/vov/client-ca/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of the TLS files (mounted read-only) */}}
{{- define "vov.tlsVolumes" -}}
{{- if .Values.tls.enabled }}
# a Secret volume, never a subPath: a renewed certificate appears in the pod without a restart
- name: tls
  secret:
    secretName: {{ include "vov.tlsSecret" . }}
    defaultMode: 0440
- name: probe
  configMap:
    name: {{ include "vov.component" (dict "root" . "component" "probe") }}
{{- if .Values.tls.clientCASecretName }}
- name: client-ca
  secret:
    secretName: {{ .Values.tls.clientCASecretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}

{{- define "vov.tlsMounts" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/vov/tls
  readOnly: true
- name: probe
  mountPath: /opt/vov/probe
  readOnly: true
{{- if .Values.tls.clientCASecretName }}
- name: client-ca
  mountPath: /etc/vov/client-ca
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/*
Probes of a vov service. Readiness asks grpc.health.v1, which the services keep truthful: NOT_SERVING
while the decoder's engine (Triton) cannot serve and while a pod drains, so such a pod gets no new
calls. Startup and liveness only ask whether the port accepts connections (it opens once the
backbone is loaded): a restart cures neither a Triton outage nor a drain, and must not cut streams.
kubelet's gRPC probe speaks plaintext only, so with TLS readiness runs files/grpc-health.py in the
container: the same health check over TLS, with the pod's own certificate under mutual TLS.
args: dict "root" $ "port" <port> "component" encoder|decoder
*/}}
{{- define "vov.serviceProbes" -}}
{{- $root := .root -}}
{{- $tcp := dict "tcpSocket" (dict "port" "grpc") -}}
startupProbe:
  {{- toYaml $tcp | nindent 2 }}
  periodSeconds: 5
  failureThreshold: 60
readinessProbe:
  {{- if $root.Values.tls.enabled }}
  exec:
    command:
      - python
      - /opt/vov/probe/grpc-health.py
      - --port={{ .port }}
      - --name={{ include "vov.component" (dict "root" $root "component" .component) }}.{{ $root.Release.Namespace }}.svc
      - --ca=/etc/vov/tls/ca.crt
      {{- if $root.Values.tls.clientCASecretName }}
      - --cert=/etc/vov/tls/tls.crt
      - --key=/etc/vov/tls/tls.key
      {{- end }}
  periodSeconds: 10
  timeoutSeconds: 8
  {{- else }}
  grpc:
    port: {{ .port | int }}
  periodSeconds: 5
  {{- end }}
  failureThreshold: 2
livenessProbe:
  {{- toYaml $tcp | nindent 2 }}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* Drain before SIGTERM: the pod leaves the Service's endpoints while it still serves */}}
{{- define "vov.preStop" -}}
lifecycle:
  preStop:
    exec:
      command: ["/bin/sleep", {{ .preStopSeconds | int64 | quote }}]
{{- end -}}

{{/* Pod termination grace: the preStop drain, then the service's own --grace, then a margin */}}
{{- define "vov.terminationGrace" -}}
{{- add .preStopSeconds .graceSeconds 15 -}}
{{- end -}}

{{/* The request cost limits both services enforce (the encoder refuses to make what the decoder would refuse) */}}
{{- define "vov.limitsEnv" -}}
{{- $l := .Values.limits -}}
{{- range $name, $value := dict "VOV_MAX_PIXELS" $l.maxPixels "VOV_MAX_FRAMES" $l.maxFrames "VOV_MAX_SAMPLER_STEPS" $l.maxSamplerSteps "VOV_MAX_D" $l.maxD "VOV_MAX_RANK" $l.maxRank "VOV_MAX_WORK" $l.maxWork "VOV_MAX_CLIP_PIXELS" $l.maxClipPixels }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ $value | int64 | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
A thread count: the value when set, else the container's CPU limit (rounded up to whole cores), so
that torch and ONNX Runtime size their pools from the pod, not from the node's cores.
args: dict "threads" <value> "container" <container name>
*/}}
{{- define "vov.threads" -}}
{{- if .threads }}
  value: {{ .threads | int64 | quote }}
{{- else }}
  valueFrom:
    resourceFieldRef:
      containerName: {{ .container }}
      resource: limits.cpu
      divisor: "1"
{{- end }}
{{- end -}}
