#!/usr/bin/env bash
# Prepare a machine for vov: Debian tools when missing, a virtualenv in .venv with vov installed.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [extras], e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

need_apt=()
command -v cwebp >/dev/null || need_apt+=(webp)
command -v avifenc >/dev/null || need_apt+=(libavif-bin)
command -v cjxl >/dev/null || need_apt+=(libjxl-tools)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
# the test suite renders the benchmark report in headless Chromium
case ",$extras," in *,dev,*) command -v chromium >/dev/null || need_apt+=(chromium) ;; esac
for pkg in plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    # another apt (an unattended upgrade, a second setup) may hold the lock: wait for it, up to 10 minutes
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (install them as root): ${need_apt[*]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck source=/dev/null  # made by scripts/setup.sh
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# the CPU build of torch first, so nothing pulls a CUDA build
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
spec="."
[ -n "$extras" ] && spec=".[$extras]"
pip install -q -e "$spec" 2>&1 | grep -v -E "^(WARNING: Location|  )" || true
python -c "import vov, torch; print('setup: vov ready, torch', torch.__version__)"
