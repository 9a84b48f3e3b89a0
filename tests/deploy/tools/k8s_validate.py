"""Validates Kubernetes manifests strictly against the API schemas of given Kubernetes versions.

Run with the interpreter that has kubernetes-validate (.venv-deploy):
  python k8s_validate.py --version 1.29 --version 1.33 [--skip-kind ScaledObject ...] FILE...
Every YAML document of every file is checked with kubernetes_validate.validate(strict=True): unknown
fields, wrong types and kinds or API versions that the version does not serve are errors. Kinds
named by --skip-kind (custom resources, checked against their own schemas elsewhere) are left out.
Prints one JSON object: {"checked": N, "errors": [{"file", "kind", "name", "version", "error"}]}.
"""

import argparse
import json
import sys

import kubernetes_validate
import yaml


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", action="append", required=True)
    parser.add_argument("--skip-kind", action="append", default=[])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    checked, errors = 0, []
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
            if kind in args.skip_kind:
                continue
            for version in args.version:
                checked += 1
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    errors.append({"file": path, "kind": kind, "name": name, "version": version,
                                   "error": f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"})
                except kubernetes_validate.SchemaNotFoundError as e:
                    errors.append({"file": path, "kind": kind, "name": name, "version": version,
                                   "error": f"Kubernetes {version} serves no {doc.get('apiVersion')} {kind}"})
                except Exception as e:  # a malformed document is an error too, never a pass
                    errors.append({"file": path, "kind": kind, "name": name, "version": version,
                                   "error": f"{type(e).__name__}: {e}"})
    json.dump({"checked": checked, "errors": errors}, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
