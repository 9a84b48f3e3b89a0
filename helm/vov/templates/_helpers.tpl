{{/* Names, labels and the pieces every workload shares. */}}

{{- define "vov.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vov.fullname" -}}
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

{{/* "<fullname>-<component>", within the 63 characters of a DNS label */}}
{{- define "vov.component" -}}
{{- printf "%s-%s" (include "vov.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "vov.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vov.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vov.labels" -}}
{{ include "vov.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: vov
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "vov.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vov.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is set */}}
{{- define "vov.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{- define "vov.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "vov.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* The Secret that holds the TLS files of a vov service */}}
{{- define "vov.tlsSecret" -}}
{{- default (printf "%s-tls" (include "vov.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "vov.tritonTLSSecret" -}}
{{- default (printf "%s-triton-tls" (include "vov.fullname" .)) .Values.tls.triton.secretName -}}
{{- end -}}

{{/*
GPU placement of a workload: args (dict "root" $ "gpu" <component gpu values> "component" <values>).
The node selector and tolerations of gpuScheduling, merged with the component's own; the GPU models
allowed become a required node affinity.
*/}}
{{- define "vov.gpuPlacement" -}}
{{- $root := .root -}}
{{- $c := .values -}}
{{- $selector := $c.nodeSelector | default dict -}}
{{- $tolerations := $c.tolerations | default list -}}
{{- if .gpu -}}
{{- $selector = merge (deepCopy $selector) ($root.Values.gpuScheduling.nodeSelector | default dict) -}}
{{- $tolerations = concat $tolerations ($root.Values.gpuScheduling.tolerations | default list) -}}
{{- end -}}
{{- with $selector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or $c.affinity (and .gpu $root.Values.gpuScheduling.products) }}
affinity:
  {{- if $c.affinity }}
  {{- toYaml $c.affinity | nindent 2 }}
  {{- else }}
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: nvidia.com/gpu.product
              operator: In
              values:
                {{- toYaml $root.Values.gpuScheduling.products | nindent 16 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The resources of a container, with its GPUs added to the limits (and requests) */}}
{{- define "vov.resources" -}}
{{- $resources := deepCopy (.resources | default dict) -}}
{{- if and .gpu .gpu.enabled -}}
{{- $limits := get $resources "limits" | default dict -}}
{{- $_ := set $limits .gpu.resourceName (.gpu.count | int) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- $requests := get $resources "requests" | default dict -}}
{{- $_ := set $requests .gpu.resourceName (.gpu.count | int) -}}
{{- $_ := set $resources "requests" $requests -}}
{{- end -}}
{{- toYaml $resources -}}
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
- name: VOV_BACKBONE
  value: {{ $root.Values.backbone | quote }}
{{- if $root.Values.model }}
- name: VOV_MODEL
  value: {{ $root.Values.model | quote }}
{{- end }}
- name: VOV_GRACE_SECONDS
  value: {{ $v.graceSeconds | int64 | quote }}
- name: VOV_TORCH_THREADS
  value: {{ $v.torchThreads | int64 | quote }}
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
- name: tls
  secret:
    secretName: {{ include "vov.tlsSecret" . }}
    defaultMode: 0440
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
kubelet's gRPC probe speaks plaintext only, so with TLS readiness falls back to TCP too.
args: dict "root" $ "port" <port>
*/}}
{{- define "vov.serviceProbes" -}}
{{- $tcp := dict "tcpSocket" (dict "port" "grpc") -}}
{{- $ready := ternary $tcp (dict "grpc" (dict "port" (.port | int))) .root.Values.tls.enabled -}}
startupProbe:
  {{- toYaml $tcp | nindent 2 }}
  periodSeconds: 5
  failureThreshold: 60
readinessProbe:
  {{- toYaml $ready | nindent 2 }}
  periodSeconds: 5
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

{{/* The directory of one model version on the models volume */}}
{{- define "vov.modelVersionDir" -}}
{{- printf "/models/%s/%s" .Values.backbone (.Values.images.models.digest | default .Values.images.models.tag | replace ":" "-") -}}
{{- end -}}

{{- define "vov.modelsClaim" -}}
{{- default (printf "%s-models" (include "vov.fullname" .)) .Values.modelRepository.pvc.existingClaim -}}
{{- end -}}

{{/* PromQL selectors of the services' series, as the ServiceMonitor labels them (job = Service) */}}
{{- define "vov.decoderSelector" -}}
{{- printf "namespace=\"%s\", job=\"%s\"" .Release.Namespace (include "vov.component" (dict "root" . "component" "decoder")) -}}
{{- end -}}

{{- define "vov.encoderSelector" -}}
{{- printf "namespace=\"%s\", job=\"%s\"" .Release.Namespace (include "vov.component" (dict "root" . "component" "encoder")) -}}
{{- end -}}

{{/* Open Decompress streams over all decoder pods: what KEDA divides by the per-pod target */}}
{{- define "vov.decoderStreamsQuery" -}}
{{- printf "sum(vov_grpc_server_in_flight{%s, grpc_service=\"vov.v1.Decoder\", grpc_method=\"Decompress\"})" (include "vov.decoderSelector" .) -}}
{{- end -}}

{{/* The models image copies its ONNX export onto the models volume (init container) */}}
{{- define "vov.stageOnnxContainer" -}}
- name: stage-onnx
  image: {{ include "vov.image" .Values.images.models | quote }}
  imagePullPolicy: {{ .Values.images.models.pullPolicy }}
  command: ["sh", "/opt/vov/scripts/stage-onnx.sh"]
  env:
    - name: VOV_EXPORT_DIR
      value: {{ .Values.modelRepository.exportPath | quote }}
    - name: VOV_VERSION_DIR
      value: {{ include "vov.modelVersionDir" . | quote }}
  resources:
    requests: {cpu: 100m, memory: 128Mi, ephemeral-storage: 64Mi}
    limits: {cpu: "1", memory: 512Mi, ephemeral-storage: 256Mi}
  securityContext:
    {{- include "vov.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    {{- include "vov.modelMounts" . | nindent 4 }}
{{- end -}}

{{- define "vov.modelMounts" -}}
- name: models
  mountPath: /models
- name: model-scripts
  mountPath: /opt/vov/scripts
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* args: dict "root" $ "scripts" <name of the ConfigMap holding the scripts> */}}
{{- define "vov.modelVolumes" -}}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "vov.modelsClaim" .root }}
- name: model-scripts
  configMap:
    name: {{ .scripts }}
    defaultMode: 0555
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "vov.modelScripts" -}}
plan-key.sh: |
  {{- .Files.Get "files/plan-key.sh" | nindent 2 }}
stage-onnx.sh: |
  {{- .Files.Get "files/stage-onnx.sh" | nindent 2 }}
build-plans.sh: |
  {{- .Files.Get "files/build-plans.sh" | nindent 2 }}
triton-start.sh: |
  {{- .Files.Get "files/triton-start.sh" | nindent 2 }}
{{- end -}}

{{/* The request cost limits both services enforce (the encoder refuses to make what the decoder would refuse) */}}
{{- define "vov.limitsEnv" -}}
{{- $l := .Values.limits -}}
{{- range $name, $value := dict "VOV_MAX_PIXELS" $l.maxPixels "VOV_MAX_FRAMES" $l.maxFrames "VOV_MAX_SAMPLER_STEPS" $l.maxSamplerSteps "VOV_MAX_D" $l.maxD "VOV_MAX_RANK" $l.maxRank "VOV_MAX_WORK" $l.maxWork }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ $value | int64 | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* NVIDIA's image under an arbitrary user with a read-only root: home and CUDA's kernel cache in /tmp */}}
{{- define "vov.nvidiaEnv" -}}
- name: HOME
  value: /tmp
- name: CUDA_CACHE_PATH
  value: /tmp/cuda-cache
{{- end -}}
