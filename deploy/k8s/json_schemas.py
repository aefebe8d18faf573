"""Strict, standalone JSON schemas for kubeconform, made offline.

kubeconform downloads its schemas from GitHub by default, which CI cannot
reach. The same schemas come from sources the Go module proxy serves: the
Kubernetes OpenAPI spec (api/openapi-spec/swagger.json in the k8s.io/kubernetes
module) and the Prometheus Operator CRDs (example/prometheus-operator-crd in its
module). Files are named as kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`
template expects, e.g. statefulset-apps-v1.json, podmonitor-monitoring-v1.json.

Usage: json_schemas.py OUT_DIR SWAGGER_JSON [CRD_YAML ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}


def file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's name: kind, the group's first label, the version."""
    api_version = f"{group}/{version}" if group else version
    parts = api_version.split("/")
    suffix = "-" + parts[0].split(".")[0].lower()
    if len(parts) > 1:
        suffix += "-" + parts[1].lower()
    return f"{kind.lower()}{suffix}.json"


def strict(schema: Any) -> Any:
    """Objects with known properties reject unknown ones (what -strict is for);
    Kubernetes' int-or-string becomes a oneOf a JSON schema validator understands.

    Walks the schema keywords only: a property may itself be named "properties"."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("format") == "int-or-string" or schema.get("x-kubernetes-int-or-string"):
        return dict(INT_OR_STRING)
    out = dict(schema)
    for key in ("properties", "definitions", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {name: strict(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [strict(sub) for sub in out[key]]
    preserve = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        found = {ref.rsplit("/", 1)[-1]} if isinstance(ref, str) else set()
        for value in node.values():
            found |= refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(refs(n) for n in node)) if node else set()
    return set()


def builtin_schemas(swagger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One standalone schema per kind: the kind's definition plus every definition it uses."""
    definitions = swagger["definitions"]
    out: dict[str, dict[str, Any]] = {}
    for definition in definitions.values():
        kinds = definition.get("x-kubernetes-group-version-kind", [])
        if not kinds:
            continue
        used: set[str] = set()
        todo = refs(definition)
        while todo:
            ref = todo.pop()
            if ref not in used:
                used.add(ref)
                todo |= refs(definitions[ref])
        schema = strict({**definition, "definitions": {r: definitions[r] for r in sorted(used)}})
        for gvk in kinds:
            out[file_name(gvk["group"], gvk["version"], gvk["kind"])] = schema
    return out


def crd_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = crd["spec"]
    out = {}
    for version in spec["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        out[file_name(spec["group"], version["name"], spec["names"]["kind"])] = strict(schema)
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir, swagger_path, *crd_paths = map(Path, argv)
    out_dir.mkdir(parents=True, exist_ok=True)
    schemas = builtin_schemas(json.loads(swagger_path.read_text()))
    for path in crd_paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                schemas.update(crd_schemas(doc))
    for name, schema in schemas.items():
        (out_dir / name).write_text(json.dumps(schema))
    print(f"{len(schemas)} schemas in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
