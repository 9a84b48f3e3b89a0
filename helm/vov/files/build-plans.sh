#!/bin/sh
# Makes sure the TensorRT plans for this container's GPU exist: $VOV_VERSION_DIR/plans/<key>, a
# complete Triton model repository (configs + model.plan files), marked READY when done.
# The plans are built by the build_plans.sh that `vov export --variant gpu` wrote (trtexec with the
# engine's shape profiles) from the staged ONNX graphs in $VOV_VERSION_DIR/onnx.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
version_dir="${VOV_VERSION_DIR:?VOV_VERSION_DIR names the model version directory on the volume}"
onnx="$version_dir/onnx"
key="$(sh "$here/plan-key.sh")"
target="$version_dir/plans/$key"

if [ -f "$target/READY" ]; then
  echo "build-plans: $target is ready"
  exit 0
fi
if [ ! -f "$onnx/vov_engine.json" ]; then
  echo "build-plans: no ONNX export in $onnx (the models image stages it)" >&2
  exit 1
fi
if [ -z "${TRTEXEC:-}" ]; then
  TRTEXEC="$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)"
fi
export TRTEXEC

mkdir -p "$version_dir/plans"
work="$version_dir/plans/.build-$key-$(hostname)-$$"
rm -rf "$work"
cp -R "$onnx" "$work"
echo "build-plans: building $key with $TRTEXEC"
start="$(date +%s)"
sh "$work/build_plans.sh"
for model in denoiser vae_decoder; do
  if [ ! -s "$work/$model/1/model.plan" ]; then
    echo "build-plans: $model/1/model.plan was not written" >&2
    exit 1
  fi
  rm -f "$work/$model/1/model.onnx"  # Triton serves the plan
done
printf 'key=%s\nseconds=%s\nbuilt_by=%s\n' "$key" "$(( $(date +%s) - start ))" "$(hostname)" >"$work/READY"
if mv -T "$work" "$target" 2>/dev/null; then
  echo "build-plans: $target ready"
else
  rm -rf "$work"
  if [ -f "$target/READY" ]; then
    echo "build-plans: $target was built by another pod"
  else
    echo "build-plans: cannot move the plans to $target" >&2
    exit 1
  fi
fi
