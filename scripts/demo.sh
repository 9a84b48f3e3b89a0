#!/usr/bin/env bash
# The main job on the embedded backbone, through the real services: start Triton, the decoder and the
# encoder on loopback (`vov serve`), compress a 768x512 photo to a .vov file through the encoder,
# decompress it through the decoder (whose denoiser runs in Triton), and compare with the original.
# Usage: scripts/demo.sh [extra compress options, e.g. --bpp 0.1 --steps 600]
# Ports: those of `vov serve` and the README (encoder 50051, decoder 50052, Triton 8001 gRPC, 8000 HTTP,
# 8002 metrics); VOV_DEMO_ENCODER_PORT, VOV_DEMO_DECODER_PORT and VOV_DEMO_TRITON_PORTS (grpc,http,metrics)
# move them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh triton,metrics
# shellcheck source=/dev/null  # made by scripts/setup.sh
. .venv/bin/activate
mkdir -p out
encoder_port="${VOV_DEMO_ENCODER_PORT:-50051}"
decoder_port="${VOV_DEMO_DECODER_PORT:-50052}"
IFS=, read -r triton_grpc triton_http triton_metrics <<< "${VOV_DEMO_TRITON_PORTS:-8001,8000,8002}"
encoder="127.0.0.1:$encoder_port"
decoder="127.0.0.1:$decoder_port"

# a held-out photo (never trained on), cropped to Kodak size, from Debian's mate-backgrounds
python - <<'PY'
from PIL import Image
from vov.train import data
photo = next(p for p in data.held_out_photos() if p.name == "LadyBird")
Image.fromarray(data.kodak_like(data.load_rgb(photo))).save("out/sample.png")
PY

vov serve --work-dir out/serve --encoder-port "$encoder_port" --decoder-port "$decoder_port" \
  --triton-grpc-port "$triton_grpc" --triton-http-port "$triton_http" --triton-metrics-port "$triton_metrics" \
  > out/serve.log 2>&1 &
serve_pid=$!
trap 'kill -TERM "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null || true' EXIT
echo "demo: starting Triton, the decoder and the encoder (the first run exports the models to ONNX) ..."
python - "$serve_pid" "$encoder" "$decoder" <<'PY'
import os, sys, time
from vov.serving.serve import wait_healthy
pid, addresses = int(sys.argv[1]), sys.argv[2:]
deadline = time.monotonic() + 900
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("demo: vov serve exited; see out/serve.log:\n" + open("out/serve.log").read()[-2000:])
    try:
        for address in addresses:
            wait_healthy(address, None, address, 2)
        break
    except Exception:
        if time.monotonic() > deadline:
            sys.exit("demo: the services did not come up; see out/serve.log")
print("demo: services ready:", ", ".join(addresses))
PY

vov compress out/sample.png -o out/sample.vov --server "$encoder" --steps 600 "$@"
vov info out/sample.vov
vov decompress out/sample.vov -o out/sample.decoded.png --server "$decoder"
python - <<'PY'
from vov.media import load_image
from vov.bench.metrics import ms_ssim, psnr
a, b = load_image("out/sample.png").pixels, load_image("out/sample.decoded.png").pixels
print(f"out/sample.decoded.png: PSNR {psnr(a, b):.2f} dB, MS-SSIM {ms_ssim(a, b):.4f} against out/sample.png")
PY
