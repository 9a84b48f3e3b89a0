# syntax=docker/dockerfile:1.7
# The model repository: the backbone's ONNX graphs exported for GPU nodes (vov export --variant gpu:
# configs for Triton's tensorrt_plan platform and build_plans.sh). The chart's init containers copy
# it onto the plan volume, where NVIDIA's Triton image builds the TensorRT plans (trtexec) on the
# GPU node. Its tag is the model version: the plans' directory is keyed by it.
# Build from the repository root (docs/deploy.md has the arguments of each model profile):
#   docker build -f docker/models.Dockerfile -t vov/models:0.1.0 .
#   docker build -f docker/models.Dockerfile --build-arg BACKBONE=wan \
#     --build-arg MODEL=Wan-AI/Wan2.1-T2V-1.3B-Diffusers --build-arg MAX_RANK=2 --build-arg MAX_BATCH=2 \
#     --build-arg PLAN_OPT=1x81x832x480 -t vov/models:wan-1.3b-0.1.0 .
# MODEL is a hub id (downloaded into this build stage only) or /context/<folder in the build context>.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG RUNTIME_IMAGE=debian:12.9-slim

FROM ${PYTHON_IMAGE} AS export
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG BACKBONE=embedded
ARG MODEL=""
ARG MAX_RANK=8
ARG MAX_BATCH=16
ARG PLAN_OPT=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HOME=/tmp/hf
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY src /src/src
COPY services /src/services
COPY model_repository /src/model_repository
# the export goes to /opt/vov/models/<backbone>-gpu: the path the chart derives from its backbone value
RUN --mount=type=bind,target=/context,readonly pip install "/src[services]" \
 && vov export --backbone "${BACKBONE}" ${MODEL:+--model "${MODEL}"} --variant gpu --max-rank "${MAX_RANK}" \
      --max-batch "${MAX_BATCH}" ${PLAN_OPT:+--plan-opt "${PLAN_OPT}"} --repository "/opt/vov/models/${BACKBONE}-gpu" --check \
 && rm -rf /tmp/hf

# only files and a POSIX shell: the export, and the scripts the chart also mounts from a ConfigMap
FROM ${RUNTIME_IMAGE}
ARG BACKBONE=embedded
RUN groupadd --gid 10001 vov && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin vov
COPY --from=export /opt/vov/models /opt/vov/models
COPY helm/vov/files/plan-key.sh helm/vov/files/stage-onnx.sh helm/vov/files/build-plans.sh helm/vov/files/triton-start.sh /opt/vov/scripts/
ENV VOV_EXPORT_DIR=/opt/vov/models/${BACKBONE}-gpu
USER 10001:10001
ENTRYPOINT ["sh", "/opt/vov/scripts/stage-onnx.sh"]
