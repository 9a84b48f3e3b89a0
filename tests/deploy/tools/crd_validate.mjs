// Validates custom resources against the schemas of their CRDs, as compiled into the
// @kubernetes-models packages (KEDA, Prometheus operator, cert-manager). Run from the folder holding their
// node_modules (NODE_PATH is not read for ES modules, so the caller passes it as argv[2]):
//   node crd_validate.mjs <node_modules dir> < docs.json
// stdin: a JSON array of manifests. stdout: {"checked": N, "errors": [{kind, name, error}]}.
// A kind this script has no schema for is an error, never a pass.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const modules = process.argv[2];
const load = async (pkg, path) => import(pathToFileURL(join(modules, pkg, path)).href);

const models = {
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda", "keda.sh/v1alpha1/ScaledObject.js", "ScaledObject"],
  "keda.sh/v1alpha1/TriggerAuthentication": ["@kubernetes-models/keda", "keda.sh/v1alpha1/TriggerAuthentication.js", "TriggerAuthentication"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator", "monitoring.coreos.com/v1/ServiceMonitor.js", "ServiceMonitor"],
  "monitoring.coreos.com/v1/PodMonitor": ["@kubernetes-models/prometheus-operator", "monitoring.coreos.com/v1/PodMonitor.js", "PodMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator", "monitoring.coreos.com/v1/PrometheusRule.js", "PrometheusRule"],
  "cert-manager.io/v1/Certificate": ["@kubernetes-models/cert-manager", "cert-manager.io/v1/Certificate.js", "Certificate"],
};

const docs = JSON.parse(readFileSync(0, "utf8"));
const errors = [];
let checked = 0;
for (const doc of docs) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const name = doc.metadata && doc.metadata.name;
  const entry = models[key];
  checked += 1;
  if (!entry) {
    errors.push({ kind: doc.kind, name, error: `no CRD schema for ${key}` });
    continue;
  }
  const [pkg, path, cls] = entry;
  const Model = (await load(pkg, path))[cls];
  try {
    new Model(doc).validate();
  } catch (e) {
    errors.push({ kind: doc.kind, name, error: String(e.message || e) });
  }
}
process.stdout.write(JSON.stringify({ checked, errors }));
