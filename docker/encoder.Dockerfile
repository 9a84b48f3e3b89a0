# syntax=docker/dockerfile:1.7
# The vov encoder: fits an adaptation per image with torch on a GPU node (CUDA build of torch).
# Build from the repository root:  docker build -f docker/encoder.Dockerfile -t vov/encoder:0.1.0 .
# The CUDA libraries come inside the torch wheels (no CUDA base image needed); the node's NVIDIA
# driver is mounted by the NVIDIA container toolkit.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY src /src/src
COPY services /src/services
COPY model_repository /src/model_repository
RUN pip install "/src[services]" && python -c "import vov_services.encoder.server"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 vov && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin vov
COPY --from=build /opt/venv /opt/venv
# the root filesystem is read-only in the cluster: caches and temporary files go to /tmp (a volume)
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp XDG_CACHE_HOME=/tmp/cache PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["python", "-m", "vov_services.encoder"]
