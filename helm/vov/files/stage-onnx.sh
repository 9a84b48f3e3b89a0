#!/bin/sh
# Copies the exported ONNX repository of this models image onto the models volume, once per model
# version: $VOV_EXPORT_DIR (inside the image) -> $VOV_VERSION_DIR/onnx.
set -eu
src="${VOV_EXPORT_DIR:?VOV_EXPORT_DIR names the exported repository in the image}"
dest="${VOV_VERSION_DIR:?VOV_VERSION_DIR names the model version directory on the volume}/onnx"
if [ -f "$dest/vov_engine.json" ]; then
  echo "stage-onnx: $dest is in place"
  exit 0
fi
for f in vov_engine.json build_plans.sh denoiser/1/model.onnx vae_decoder/config.pbtxt; do
  if [ ! -f "$src/$f" ]; then
    echo "stage-onnx: $src/$f is missing: is $src an export made with vov export --variant gpu?" >&2
    exit 1
  fi
done
mkdir -p "$(dirname "$dest")"
tmp="$dest.tmp.$(hostname).$$"
rm -rf "$tmp"
cp -R "$src" "$tmp"
# a rename is atomic: the directory is either absent or complete
if mv -T "$tmp" "$dest" 2>/dev/null; then
  echo "stage-onnx: copied $src to $dest"
else
  rm -rf "$tmp"
  if [ -f "$dest/vov_engine.json" ]; then
    echo "stage-onnx: $dest was staged by another pod"
  else
    echo "stage-onnx: cannot move the export to $dest" >&2
    exit 1
  fi
fi
