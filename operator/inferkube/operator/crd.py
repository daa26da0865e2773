"""Generate the CustomResourceDefinitions (InferenceService, InferenceQuota) from the pydantic API models.

The pydantic JSON schema is turned into a Kubernetes structural schema: references inlined, optional
``null`` branches dropped, int-or-string marked the Kubernetes way, defaults left to the models (the
operator applies them when it parses ``spec``), descriptions kept (they become ``kubectl explain``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from inferkube.api import contract
from inferkube.api.quota import InferenceQuotaSpec, InferenceQuotaStatus
from inferkube.api.spec import InferenceServiceSpec
from inferkube.api.status import InferenceServiceStatus

CRD_FILENAME = f"{contract.GROUP}_{contract.PLURAL}.yaml"
QUOTA_CRD_FILENAME = f"{contract.GROUP}_{contract.QUOTA_PLURAL}.yaml"
# kustomize also reads a file named `Kustomization`; `kubectl apply -f crds/` reads only *.yaml, *.yml
# and *.json, so this name lets both `kubectl apply -f crds/` and `kubectl apply -k manifests/` work.
KUSTOMIZATION_FILENAME = "Kustomization"
MAX_NAME_LENGTH = 45  # children add suffixes such as "-dl-0123abcd"; DNS labels stop at 63
_DROP_KEYS = {"title", "default", "additionalProperties", "examples"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every $ref with a copy of its definition, recursively."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**_inline(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Turn one inlined pydantic schema node into a structural OpenAPI v3 schema node."""
    node = dict(node)
    unwrapped = False
    while "anyOf" in node:  # Optional[X] wraps X's own anyOf (e.g. an int-or-string alias) in a second one
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if node.get("x-kubernetes-int-or-string"):
            string_branch: dict[str, Any] = next((b for b in branches if b.get("type") == "string"), {})
            if "pattern" in string_branch:
                node.setdefault("pattern", string_branch["pattern"])
            canonical = [{"type": "integer"}, {"type": "string"}]
            if not unwrapped or node["anyOf"] != canonical:
                del node["anyOf"]
                node["anyOf"] = canonical
            break
        del node["anyOf"]
        if len(branches) == 1:
            description = node.get("description")
            node, unwrapped = {**node, **branches[0]}, True
            if description:
                node["description"] = description
        else:
            raise ValueError(f"cannot express a union in a structural schema: {branches}")
    if "allOf" in node and len(node["allOf"]) == 1:
        description = node.get("description")
        node = {**{k: v for k, v in node.items() if k != "allOf"}, **node["allOf"][0]}
        if description:
            node["description"] = description
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[flag] = node.pop(bound)
            node[bound] = True
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    additional = node.get("additionalProperties")
    out: dict[str, Any] = {k: v for k, v in node.items() if k not in _DROP_KEYS}
    if isinstance(additional, dict) and not preserve:
        out["additionalProperties"] = _structural(additional)
    if "properties" in out:
        out["properties"] = {k: _structural(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _structural(out["items"])
    if preserve:
        out.setdefault("type", "object")
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of an API model, descriptions included."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_inline(raw, defs))


def build_crd() -> dict[str, Any]:
    """The InferenceService CustomResourceDefinition as a dict."""
    spec_schema = model_schema(InferenceServiceSpec)
    status_schema = model_schema(InferenceServiceStatus)
    ready = '.status.conditions[?(@.type=="Ready")].status'
    schema = {
        "type": "object",
        "description": (
            "InferenceService serves one LLM through an OpenAI-compatible API on the inferkube runtime "
            "(vLLM): a GPU-affine Deployment, a Service, an autoscaler, a model cache and monitoring."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: serving.inferkube.dev/v1alpha1."},
            "kind": {"type": "string", "description": "Kind of this object: InferenceService."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters (child names add suffixes)",
            }
        ],
    }
    subresources = {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns: list[dict[str, Any]] = [
        {"name": "Ready", "type": "string", "jsonPath": ready},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.source"},
        {"name": "Replicas", "type": "string", "jsonPath": ".status.replicasSummary",
         "description": "Ready/desired replicas, e.g. 1/2."},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Detail", "type": "string", "jsonPath": ".status.phaseDetail", "priority": 1},
    ]
    return _crd(contract.KIND, contract.PLURAL, contract.SINGULAR, contract.SHORT_NAMES, "Namespaced",
                schema, subresources, columns)


def _crd(kind: str, plural: str, singular: str, short_names: list[str], scope: str,
         schema: dict[str, Any], subresources: dict[str, Any], columns: list[dict[str, Any]]) -> dict[str, Any]:
    """The CustomResourceDefinition around one kind's schema (one served and stored version)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{contract.GROUP}",
            "labels": {contract.LABEL_PART_OF: contract.APP_NAME},
        },
        "spec": {
            "group": contract.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": [contract.APP_NAME],
            },
            "versions": [
                {
                    "name": contract.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def build_quota_crd() -> dict[str, Any]:
    """The cluster-scoped InferenceQuota CustomResourceDefinition as a dict."""
    schema = {
        "type": "object",
        "description": (
            "InferenceQuota is owned by a platform team: it caps the GPUs and replicas of the InferenceServices "
            "it selects (admitted oldest first) and pushes tenant ceilings, defaults and priorities to their runtimes."
        ),
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: serving.inferkube.dev/v1alpha1."},
            "kind": {"type": "string", "description": "Kind of this object: InferenceQuota."},
            "metadata": {"type": "object"},
            "spec": model_schema(InferenceQuotaSpec),
            "status": model_schema(InferenceQuotaStatus),
        },
    }
    over = '.status.conditions[?(@.type=="OverBudget")].status'
    columns: list[dict[str, Any]] = [
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.used.gpus", "description": "GPUs counted."},
        {"name": "GPU Limit", "type": "integer", "jsonPath": ".spec.limits.gpus"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.used.replicas", "description": "Replicas counted."},
        {"name": "Replica Limit", "type": "integer", "jsonPath": ".spec.limits.replicas"},
        {"name": "Services", "type": "integer", "jsonPath": ".status.serviceCount"},
        {"name": "Refused", "type": "integer", "jsonPath": ".status.refusedCount", "priority": 1},
        {"name": "Limited", "type": "integer", "jsonPath": ".status.limitedCount", "priority": 1,
         "description": "Services running below their spec (maxReplicas clamped, scale-up blocked)."},
        {"name": "OverBudget", "type": "string", "jsonPath": over, "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(contract.QUOTA_KIND, contract.QUOTA_PLURAL, contract.QUOTA_SINGULAR, contract.QUOTA_SHORT_NAMES,
                "Cluster", schema, {"status": {}}, columns)


def _render(crd: dict[str, Any], source: str) -> str:
    header = f"# Generated by `inferkube crd` from {source}. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=1000, allow_unicode=True)


def render_crd_yaml() -> str:
    """The InferenceService CRD as the YAML text committed under crds/."""
    return _render(build_crd(), "inferkube.api.spec")


def render_quota_crd_yaml() -> str:
    """The InferenceQuota CRD as the YAML text committed under crds/."""
    return _render(build_quota_crd(), "inferkube.api.quota")


def rendered_crds() -> dict[str, str]:
    """Every generated CRD file under crds/: file name -> YAML text."""
    return {CRD_FILENAME: render_crd_yaml(), QUOTA_CRD_FILENAME: render_quota_crd_yaml()}


def write_crds(directory: Path) -> list[Path]:
    """Write every generated CRD into a directory and return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in rendered_crds().items():
        path = directory / filename
        path.write_text(text)
        written.append(path)
    kustomization = directory / KUSTOMIZATION_FILENAME
    kustomization.write_text(render_kustomization_yaml())
    (directory / "kustomization.yaml").unlink(missing_ok=True)  # the old name: kustomize refuses two
    return [*written, kustomization]


def render_kustomization_yaml() -> str:
    """crds/Kustomization, so manifests/ can include the generated CRDs as a kustomize resource."""
    resources = "".join(f"  - {name}\n" for name in rendered_crds())
    return (
        "# Generated by `inferkube crd`. Do not edit by hand.\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n{resources}"
    )
