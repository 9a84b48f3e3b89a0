#!/usr/bin/env bash
# Prepare a machine for vov: Debian tools when missing, a virtualenv in .venv with vov installed.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [extras], e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

need_apt=()
why=()  # one line per package: what it is for
want() { need_apt+=("$1"); why+=("  $1: $2"); }
command -v cwebp >/dev/null || want webp "cwebp, the WebP baseline of vov bench"
command -v avifenc >/dev/null || want libavif-bin "avifenc, the AVIF baseline of vov bench"
command -v cjxl >/dev/null || want libjxl-tools "cjxl, the JPEG XL baseline of vov bench"
command -v ffmpeg >/dev/null || want ffmpeg "video in and out (MP4, MKV, WebM) and the video baselines"
# the test suite renders the benchmark report in headless Chromium
case ",$extras," in *,dev,*) command -v chromium >/dev/null || want chromium "renders the benchmark report in the tests" ;; esac
for pkg in plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04; do
  dpkg -s "$pkg" >/dev/null 2>&1 || want "$pkg" "openly licensed photos: training, held-out evaluation and the demo"
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${#need_apt[@]} Debian packages with apt-get (a minute or two on a fresh machine):"
    printf '%s\n' "${why[@]}"
    # another apt (an unattended upgrade, a second setup) may hold the lock: wait for it, up to 10 minutes
    echo "setup: apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -q | { grep -E "^(Get|Err)" | sed 's/^/  /'; true; }
    echo "setup: apt-get install ${need_apt[*]}"
    # one line per package unpacked and set up, so a slow download shows where it is
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need_apt[@]}" \
      | { grep -E "^(Need to get|Unpacking|Setting up) " | sed 's/^/  /'; true; }
    echo "setup: Debian packages installed"
  else
    echo "setup: missing Debian packages (install them as root):" >&2
    printf '%s\n' "${why[@]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: a virtualenv in .venv"
  python3 -m venv .venv
fi
# shellcheck source=/dev/null  # made by scripts/setup.sh
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# the CPU build of torch first, so nothing pulls a CUDA build
python -c "import torch" 2>/dev/null || echo "setup: installing torch 2.13.0 (the CPU build, about 200 MB)"
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "setup: installing vov ($spec) and its dependencies"
pip install -q -e "$spec" 2>&1 | grep -v -E "^(WARNING: Location|  )" || true
python -c "import vov, torch; print('setup: vov ready, torch', torch.__version__)"
