#!/usr/bin/env bash
# Render every kustomization under deploy/k8s and validate it with kubeconform
# (strict: unknown fields fail) against schemas made offline from the Go module
# proxy (see json_schemas.py). Tools and schemas are cached in ~/.cache/funnel-stream.
set -euo pipefail
cd "$(dirname "$0")"
KUSTOMIZE_VERSION=v5.8.2
KUBECONFORM_VERSION=v0.8.0
K8S_VERSION=1.34.4
OPERATOR_VERSION=v0.85.0
PYTHON=${PYTHON:-../../.venv/bin/python}
cache=${FUNNEL_TOOLS_CACHE:-$HOME/.cache/funnel-stream}/k8s
bin=$cache/bin
schemas=$cache/schemas-$K8S_VERSION-$OPERATOR_VERSION
mkdir -p "$bin"

tool() {  # tool NAME MODULE VERSION: go install once per version
  if [ ! -x "$bin/$1-$3" ]; then
    echo "installing $1 $3 from the Go module proxy"
    GOBIN="$bin" go install "$2@$3"
    mv "$bin/$1" "$bin/$1-$3"
  fi
}
tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"

module_dir() {  # module_dir MODULE VERSION: where `go mod download` unpacked it
  (cd "$cache" && GOFLAGS=-mod=mod go mod download -json "$1@$2") |
    "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}
if [ ! -f "$schemas/.done" ]; then
  echo "making JSON schemas: Kubernetes $K8S_VERSION, Prometheus Operator $OPERATOR_VERSION"
  k8s=$(module_dir k8s.io/kubernetes "v$K8S_VERSION")
  operator=$(module_dir github.com/prometheus-operator/prometheus-operator "$OPERATOR_VERSION")
  rm -rf "$schemas"
  "$PYTHON" json_schemas.py "$schemas" "$k8s/api/openapi-spec/swagger.json" \
    "$operator"/example/prometheus-operator-crd/monitoring.coreos.com_{podmonitors,prometheusrules,servicemonitors}.yaml
  touch "$schemas/.done"
fi

conform() {
  "$bin/kubeconform-$KUBECONFORM_VERSION" -strict -summary -output text \
    -kubernetes-version "$K8S_VERSION" \
    -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$@"
}

# The canary: known-bad manifests must be rejected, or the schemas prove nothing.
if conform testdata/invalid.yaml > "$cache/canary.txt" 2>&1; then
  cat "$cache/canary.txt"
  echo "FAIL: testdata/invalid.yaml passed validation; the schemas are not strict" >&2
  exit 1
fi
echo "== canary: testdata/invalid.yaml rejected as it must be:"
grep -c "is invalid" "$cache/canary.txt" | xargs echo "   invalid resources:"

status=0
for dir in base overlays/*; do
  echo "== deploy/k8s/$dir"
  if ! "$bin/kustomize-$KUSTOMIZE_VERSION" build "$dir" > "$cache/rendered.yaml"; then
    status=1
    continue
  fi
  conform "$cache/rendered.yaml" || status=1
done
exit $status
