{{/* PromQL of the autoscalers, rules and the dashboard: one home for every selector and signal. */}}

{{/* The Decoder RPCs that stream a decode (proto/vov/v1/codec.proto): each open one is load */}}
{{- define "vov.decodeMethods" -}}
Decompress|Edit
{{- end -}}

{{/* Selectors of the series, as the monitors label them: job = the Service (ServiceMonitor) or namespace/PodMonitor */}}
{{- define "vov.decoderSelector" -}}
{{- printf "namespace=\"%s\", job=\"%s\"" .Release.Namespace (include "vov.component" (dict "root" . "component" "decoder")) -}}
{{- end -}}

{{- define "vov.encoderSelector" -}}
{{- printf "namespace=\"%s\", job=\"%s\"" .Release.Namespace (include "vov.component" (dict "root" . "component" "encoder")) -}}
{{- end -}}

{{- define "vov.tritonSelector" -}}
{{- printf "namespace=\"%s\", job=\"%s/%s\"" .Release.Namespace .Release.Namespace (include "vov.component" (dict "root" . "component" "triton")) -}}
{{- end -}}

{{/*
Open decode streams (every decode RPC) of the decoder pods: those a worker serves and those waiting
for one (services/metrics.py). One selector over both gauges, so a method whose queue gauge has no
series yet still counts its streams in flight.
*/}}
{{- define "vov.streamGauges" -}}
vov_grpc_server_in_flight|vov_grpc_server_queued
{{- end -}}

{{- define "vov.decodeStreams" -}}
{{- printf "{__name__=~\"%s\", %s, grpc_service=\"vov.v1.Decoder\", grpc_method=~\"%s\"}" (include "vov.streamGauges" .) (include "vov.decoderSelector" .) (include "vov.decodeMethods" .) -}}
{{- end -}}

{{/* All decoder pods' open decode streams: what KEDA divides by the per-pod target */}}
{{- define "vov.decoderStreamsQuery" -}}
{{- printf "sum(%s)" (include "vov.decodeStreams" .) -}}
{{- end -}}

{{/* Seconds a Triton request waited, per request, over every model of every Triton pod */}}
{{- define "vov.tritonQueueSeconds" -}}
{{- $t := include "vov.tritonSelector" . -}}
{{- printf "sum(rate(nv_inference_queue_duration_us{%s}[2m])) / clamp_min(sum(rate(nv_inference_request_success{%s}[2m])), 0.001) / 1e6" $t $t -}}
{{- end -}}

{{/*
What KEDA reads for Triton: the queue time per request times the number of Triton pods, so that
its AverageValue (the total over the target) asks for replicas x queue time / target, as an HPA
would for the average of a per-pod metric.
*/}}
{{- define "vov.tritonScalingQuery" -}}
{{- printf "(%s) * count(count by (pod) (nv_inference_request_success{%s}))" (include "vov.tritonQueueSeconds" .) (include "vov.tritonSelector" .) -}}
{{- end -}}
