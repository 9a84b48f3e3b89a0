{{/* The backbone's weights: where the services find them, the volume they come on, the download. */}}

{{/* The folder of the download inside the weights claim: OWNER--NAME/REVISION */}}
{{- define "vov.downloadPath" -}}
{{- printf "%s/%s" (.Values.model.download.hubId | replace "/" "--") .Values.model.download.revision -}}
{{- end -}}

{{/* VOV_MODEL: the folder the services load (empty: the backbone's own) */}}
{{- define "vov.modelLocation" -}}
{{- $m := .Values.model -}}
{{- if eq $m.source "volume" -}}
{{- printf "/opt/vov/weights/%s" $m.volume.path | trimSuffix "/" -}}
{{- else if eq $m.source "download" -}}
{{- printf "/opt/vov/weights/%s" (include "vov.downloadPath" .) -}}
{{- else -}}
{{- $m.name -}}
{{- end -}}
{{- end -}}

{{- define "vov.weightsClaim" -}}
{{- .Values.model.volume.claimName | default (printf "%s-weights" (include "vov.fullname" .)) -}}
{{- end -}}

{{- define "vov.mountsWeights" -}}
{{- if has .Values.model.source (list "volume" "download") }}true{{ end -}}
{{- end -}}

{{/* The services' environment for the weights: the folder, and the hub never contacted (no egress) */}}
{{- define "vov.modelEnv" -}}
- name: VOV_BACKBONE
  value: {{ .Values.backbone | quote }}
{{- with include "vov.modelLocation" . }}
- name: VOV_MODEL
  value: {{ . | quote }}
{{- end }}
- name: HF_HUB_OFFLINE
  value: "1"
{{- end -}}

{{- define "vov.weightsVolume" -}}
{{- if include "vov.mountsWeights" . }}
- name: weights
  persistentVolumeClaim:
    claimName: {{ include "vov.weightsClaim" . }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "vov.weightsMount" -}}
{{- if include "vov.mountsWeights" . }}
- name: weights
  mountPath: /opt/vov/weights
  readOnly: true
{{- end }}
{{- end -}}

{{/*
A service pod waits for a downloaded folder to be complete (the download renames it into place
whole). args: dict "root" $ "image" <images entry>
*/}}
{{- define "vov.waitForWeights" -}}
{{- $root := .root -}}
{{- if eq $root.Values.model.source "download" }}
- name: wait-for-weights
  image: {{ include "vov.image" .image | quote }}
  imagePullPolicy: {{ .image.pullPolicy }}
  command: ["sh", "-c", "until [ -f \"$VOV_MODEL/model_index.json\" ]; do echo \"waiting for $VOV_MODEL (the download Job)\"; sleep 15; done"]
  env:
    - name: VOV_MODEL
      value: {{ include "vov.modelLocation" $root | quote }}
  resources:
    requests: {cpu: 10m, memory: 16Mi, ephemeral-storage: 1Mi}
    limits: {cpu: 100m, memory: 64Mi, ephemeral-storage: 16Mi}
  securityContext:
    {{- include "vov.containerSecurityContext" $root | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- include "vov.weightsMount" $root | nindent 4 }}
{{- end }}
{{- end -}}

{{/* The download Job's pod: the decoder image runs files/fetch-weights.py into the weights claim */}}
{{- define "vov.fetchWeightsPod" -}}
{{- $d := .Values.model.download -}}
restartPolicy: OnFailure
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "vov.podSecurityContext" . | nindent 2 }}
containers:
  - name: fetch-weights
    image: {{ include "vov.image" .Values.images.decoder | quote }}
    imagePullPolicy: {{ .Values.images.decoder.pullPolicy }}
    command: ["python", "/opt/vov/fetch/fetch-weights.py", "--repo={{ $d.hubId }}", "--revision={{ $d.revision }}",
              "--dest=/weights/{{ include "vov.downloadPath" . }}"]
    env:
      - name: HF_HOME
        value: /tmp/hf
      - name: HF_HUB_DISABLE_TELEMETRY
        value: "1"
      {{- if $d.tokenSecret }}
      - name: HF_TOKEN
        valueFrom:
          secretKeyRef:
            name: {{ $d.tokenSecret }}
            key: {{ $d.tokenKey }}
      {{- end }}
      {{- with $d.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    resources:
      {{- toYaml $d.resources | nindent 6 }}
    securityContext:
      {{- include "vov.containerSecurityContext" . | nindent 6 }}
    volumeMounts:
      - name: weights
        mountPath: /weights
      - name: fetch
        mountPath: /opt/vov/fetch
        readOnly: true
      - name: tmp
        mountPath: /tmp
volumes:
  - name: weights
    persistentVolumeClaim:
      claimName: {{ include "vov.weightsClaim" . }}
  - name: fetch
    configMap:
      name: {{ include "vov.component" (dict "root" . "component" "fetch-weights") }}
  - name: tmp
    emptyDir:
      sizeLimit: 2Gi
{{- end -}}
