# syntax=docker/dockerfile:1.7
# The vov decoder: runs the sampler loop on CPU nodes, the denoiser in Triton (or, with
# VOV_TRITON_URL empty, in this process with ONNX Runtime from the graphs exported at build time).
# Build from the repository root:  docker build -f docker/decoder.Dockerfile -t vov/decoder:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG BACKBONE=embedded
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY src /src/src
COPY services /src/services
COPY model_repository /src/model_repository
# and the exported graphs of the in-process engine (the chart's decoder.modelRepository)
RUN pip install "/src[services]" \
 && vov export --backbone "${BACKBONE}" --repository "/opt/vov/models/${BACKBONE}" --check

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 vov && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin vov
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/vov/models /opt/vov/models
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp XDG_CACHE_HOME=/tmp/cache PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 50052 9090
ENTRYPOINT ["python", "-m", "vov_services.decoder"]
