{{/* The model export and its TensorRT plans: the plan volume, staging and the scripts. */}}

{{/* Whether Triton runs (the decoder's engine is Triton) */}}
{{- define "vov.tritonEnabled" -}}
{{- if and .Values.triton.enabled .Values.decoder.enabled (eq .Values.decoder.engine "triton") -}}true{{- end -}}
{{- end -}}

{{/* The directory of one model version on the plan volume: backbone, then the models image's tag or digest */}}
{{- define "vov.modelVersionDir" -}}
{{- printf "/plans/%s/%s" .Values.backbone (.Values.images.models.digest | default .Values.images.models.tag | replace ":" "-") -}}
{{- end -}}

{{/* Where the models image keeps its export: plans.exportPath, else the path its Dockerfile derives from the backbone */}}
{{- define "vov.exportPath" -}}
{{- .Values.plans.exportPath | default (printf "/opt/vov/models/%s-gpu" .Values.backbone) -}}
{{- end -}}

{{/* The claim every Triton replica shares (plans.volume.mode shared) */}}
{{- define "vov.sharedPlansClaim" -}}
{{- .Values.plans.volume.existingClaim | default (printf "%s-plans" (include "vov.fullname" .)) -}}
{{- end -}}

{{/* The models image copies its ONNX export onto the plan volume (init container) */}}
{{- define "vov.stageOnnxContainer" -}}
- name: stage-onnx
  image: {{ include "vov.image" .Values.images.models | quote }}
  imagePullPolicy: {{ .Values.images.models.pullPolicy }}
  command: ["sh", "/opt/vov/scripts/stage-onnx.sh"]
  env:
    - name: VOV_EXPORT_DIR
      value: {{ include "vov.exportPath" . | quote }}
    - name: VOV_VERSION_DIR
      value: {{ include "vov.modelVersionDir" . | quote }}
  resources:
    requests: {cpu: 100m, memory: 128Mi, ephemeral-storage: 64Mi}
    limits: {cpu: "1", memory: 512Mi, ephemeral-storage: 256Mi}
  securityContext:
    {{- include "vov.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    {{- include "vov.planMounts" . | nindent 4 }}
{{- end -}}

{{/*
The plans of this pod's GPU: built by NVIDIA's image (trtexec) with the GPU the Triton pod already
holds, only when the key (GPU model, MIG profile, TensorRT version, export recipe) has no READY
directory yet; otherwise the container ends at once. NVIDIA's entrypoint runs first (args only).
*/}}
{{- define "vov.buildPlansContainer" -}}
- name: build-plans
  image: {{ include "vov.image" .Values.images.triton | quote }}
  imagePullPolicy: {{ .Values.images.triton.pullPolicy }}
  args: ["sh", "/opt/vov/scripts/build-plans.sh"]
  env:
    - name: VOV_VERSION_DIR
      value: {{ include "vov.modelVersionDir" . | quote }}
    {{- include "vov.nvidiaEnv" . | nindent 4 }}
  resources:
    {{- include "vov.resources" (dict "resources" .Values.plans.build.resources "gpu" .Values.triton.gpu) | nindent 4 }}
  securityContext:
    {{- include "vov.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    {{- include "vov.planMounts" . | nindent 4 }}
{{- end -}}

{{- define "vov.planMounts" -}}
- name: plans
  mountPath: /plans
- name: model-scripts
  mountPath: /opt/vov/scripts
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The pod's volumes besides the plans (the plans come from volumeClaimTemplates or the shared claim) */}}
{{- define "vov.planVolumes" -}}
{{- if eq .Values.plans.volume.mode "shared" }}
- name: plans
  persistentVolumeClaim:
    claimName: {{ include "vov.sharedPlansClaim" . }}
{{- end }}
- name: model-scripts
  configMap:
    name: {{ include "vov.component" (dict "root" . "component" "model-scripts") }}
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
triton-lifecycle.py: |
  {{- .Files.Get "files/triton-lifecycle.py" | nindent 2 }}
{{- end -}}

{{/* NVIDIA's image under an arbitrary user with a read-only root: home and CUDA's kernel cache in /tmp */}}
{{- define "vov.nvidiaEnv" -}}
- name: HOME
  value: /tmp
- name: CUDA_CACHE_PATH
  value: /tmp/cuda-cache
{{- end -}}
