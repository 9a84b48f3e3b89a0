#!/bin/sh
# Makes sure the TensorRT plans for this container's GPU exist: $VOV_VERSION_DIR/plans/<key>, a
# complete Triton model repository (configs + model.plan files), marked READY when done. A key that
# is there is used as it is: nothing is built, and the run takes a second.
# The plans are built by the build_plans.sh that `vov export --variant gpu` wrote (trtexec with the
# engine's shape profiles) from the staged ONNX graphs in $VOV_VERSION_DIR/onnx. The graphs and
# their external data (model.onnx.data) are linked into the build directory, never copied, and the
# links are removed once the plans are written: a plan directory holds configs and plans only.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
version_dir="${VOV_VERSION_DIR:?VOV_VERSION_DIR names the model version directory on the volume}"
onnx="$version_dir/onnx"

if [ ! -f "$onnx/vov_engine.json" ]; then
  echo "build-plans: no ONNX export in $onnx (the models image stages it)" >&2
  exit 1
fi
key="$(sh "$here/plan-key.sh" "$onnx")"
target="$version_dir/plans/$key"
if [ -f "$target/READY" ]; then
  echo "build-plans: $target is ready"
  exit 0
fi
if [ -z "${TRTEXEC:-}" ]; then
  TRTEXEC="$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)"
fi
export TRTEXEC

mkdir -p "$version_dir/plans"
work="$version_dir/plans/.build-$key-$(hostname)-$$"
rm -rf "$work"
trap 'rm -rf "$work"' EXIT
# the repository's layout and small files are copied; the graphs and their weights are linked
(cd "$onnx" && find . -type d) | while IFS= read -r dir; do mkdir -p "$work/$dir"; done
(cd "$onnx" && find . -type f) | while IFS= read -r file; do
  case "$file" in
    *.onnx | *.onnx.data) ln -s "$onnx/$file" "$work/$file" ;;
    *) cp "$onnx/$file" "$work/$file" ;;
  esac
done

echo "build-plans: building $key with $TRTEXEC"
start="$(date +%s)"
sh "$work/build_plans.sh"
for config in "$work"/*/config.pbtxt; do
  model="$(dirname "$config")"
  if grep -q '^platform: "tensorrt_plan"' "$config" && [ ! -s "$model/1/model.plan" ]; then
    echo "build-plans: $(basename "$model")/1/model.plan was not written" >&2
    exit 1
  fi
done
find "$work" -type l -name '*.onnx*' -exec rm -f {} +  # Triton serves the plans
printf 'key=%s\nseconds=%s\nbuilt_by=%s\n' "$key" "$(( $(date +%s) - start ))" "$(hostname)" >"$work/READY"
if mv -T "$work" "$target" 2>/dev/null; then
  echo "build-plans: $target ready"
elif [ -f "$target/READY" ]; then
  echo "build-plans: $target was built by another pod"
else
  echo "build-plans: cannot move the plans to $target" >&2
  exit 1
fi
