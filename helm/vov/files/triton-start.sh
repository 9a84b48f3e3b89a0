#!/bin/sh
# Starts Triton on the plans of this node's GPU ($VOV_VERSION_DIR/plans/<key>); extra arguments go
# to tritonserver.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
version_dir="${VOV_VERSION_DIR:?VOV_VERSION_DIR names the model version directory on the volume}"
key="$(sh "$here/plan-key.sh" "$version_dir/onnx")"
repository="$version_dir/plans/$key"
if [ ! -f "$repository/READY" ]; then
  echo "triton-start: no plans for $key in $version_dir/plans: set plans.build.enabled (the pod's init container builds them)" >&2
  exit 1
fi
echo "triton-start: serving $repository"
exec "${TRITONSERVER:-tritonserver}" --model-repository="$repository" "$@"
