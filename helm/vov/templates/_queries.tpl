{{/* PromQL of the autoscalers, rules and dashboards. */}}

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
