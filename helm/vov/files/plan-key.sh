#!/bin/sh
# Prints the key of the plans for the GPU this container sees and the staged export given as the
# only argument: the GPU model (and MIG profile), the TensorRT version and the digest of the export's
# build recipe (build_plans.sh: the trtexec shape profiles and precision), e.g.
# nvidia-a100-sxm4-80gb-mig-1g.10gb-trt-10.5.0.18-3f2a9c1e0b7d.
# TensorRT plans only load on the GPU model and TensorRT version that built them, and serve only the
# shapes they were built for, so a node pool of another GPU, a new Triton image or an export with
# other shapes gets a directory of its own and builds its plans; the backbone and the model version
# are the directory above (VOV_VERSION_DIR).
# Usage: plan-key.sh EXPORT_DIR
set -eu
export_dir="${1:?plan-key.sh needs the staged export directory (the one holding build_plans.sh)}"
if [ ! -f "$export_dir/build_plans.sh" ]; then
  echo "plan-key: no build_plans.sh in $export_dir" >&2
  exit 1
fi

slug() { tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9.]\{1,\}/-/g' -e 's/^-//' -e 's/-$//'; }

gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
if [ -z "$gpu" ]; then
  echo "plan-key: nvidia-smi lists no GPU in this container" >&2
  exit 1
fi
# a MIG slice shows as "  MIG 1g.10gb  Device  0: (UUID: MIG-...)" under its GPU
mig="$(nvidia-smi -L | sed -n 's/^[[:space:]]*MIG[[:space:]]\{1,\}\([0-9]\{1,\}g\.[0-9]\{1,\}gb\).*/\1/p' | head -n 1)"

trt="${TRT_VERSION:-}"
if [ -z "$trt" ]; then
  trt="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
fi
if [ -z "$trt" ]; then
  for package in libnvinfer10 libnvinfer8 tensorrt; do
    trt="$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || true)"
    [ -z "$trt" ] || break
  done
fi
if [ -z "$trt" ]; then
  echo "plan-key: cannot tell the TensorRT version (no TRT_VERSION, tensorrt module or libnvinfer package)" >&2
  exit 1
fi

key="$(printf '%s' "$gpu" | slug)"
if [ -n "$mig" ]; then
  key="$key-mig-$mig"
fi
recipe="$(sha256sum "$export_dir/build_plans.sh" | cut -c 1-12)"
printf '%s-trt-%s-%s\n' "$key" "$(printf '%s' "$trt" | slug)" "$recipe"
