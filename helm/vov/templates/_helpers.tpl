{{/* Names, labels, images, security contexts, GPU placement and resources. */}}

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

{{/*
The pod security context. args: the root context, or dict "root" $ "user" <uid> for a pod that runs
as a user of its own (Triton). openshift: no fixed user, group or fsGroup; OpenShift's restricted
SCC gives each pod a UID of the namespace's range.
*/}}
{{- define "vov.podSecurityContext" -}}
{{- $root := .root | default . -}}
{{- $psc := deepCopy $root.Values.podSecurityContext -}}
{{- if .user -}}
{{- $_ := set $psc "runAsUser" (.user | int) -}}
{{- $_ := set $psc "runAsGroup" (.user | int) -}}
{{- $_ := set $psc "fsGroup" (.user | int) -}}
{{- end -}}
{{- if $root.Values.openshift -}}
{{- $psc = omit $psc "runAsUser" "runAsGroup" "fsGroup" -}}
{{- end -}}
{{- toYaml $psc -}}
{{- end -}}

{{- define "vov.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
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

{{/* An autoscaler's behaviour: at most podsPerMinute pods added or removed a minute, after the windows */}}
{{- define "vov.scalingBehavior" -}}
scaleUp:
  stabilizationWindowSeconds: {{ .scaleUp.stabilizationWindowSeconds }}
  policies:
    - type: Pods
      value: {{ .scaleUp.podsPerMinute }}
      periodSeconds: 60
scaleDown:
  stabilizationWindowSeconds: {{ .scaleDown.stabilizationWindowSeconds }}
  policies:
    - type: Pods
      value: {{ .scaleDown.podsPerMinute }}
      periodSeconds: 60
{{- end -}}

{{/* Whether the idle-first controller runs (an autoscaled decoder whose metrics it can read) */}}
{{- define "vov.idleFirstEnabled" -}}
{{- $c := .Values.decoder -}}
{{- if and $c.enabled $c.autoscaling.enabled $c.idleFirst.enabled .Values.metrics.enabled -}}true{{- end -}}
{{- end -}}
