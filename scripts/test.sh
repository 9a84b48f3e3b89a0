#!/usr/bin/env bash
# The test suite: sets up the machine, then runs every test (the slow end-to-end ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/deploy_tools.sh  # helm, checkov, promtool... for tests/deploy (into .tools/, .venv-deploy/)
# shellcheck source=/dev/null  # made by scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"
