"""`kubectl apply -k manifests/` installs a valid, least-privilege operator."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferkube.operator import events, kinds, settings
from inferkube.operator.crd import KUSTOMIZATION_FILENAME, render_kustomization_yaml
from inferkube.operator.settings import OperatorSettings, load_settings
from tests.schemas import NEWEST_K8S, OLDEST_K8S, validate_k8s

REPO = Path(__file__).resolve().parents[3]


@lru_cache(maxsize=1)
def rendered() -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with built-in kustomize) is part of this machine image"
    out = subprocess.run([kubectl, "kustomize", str(REPO / "manifests")], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in rendered() if o["kind"] == kind and name in (None, o["metadata"]["name"]))


def test_kustomization_renders_every_install_object() -> None:
    kinds = sorted(o["kind"] for o in rendered())
    assert kinds == sorted(["Namespace", "CustomResourceDefinition", "CustomResourceDefinition", "ServiceAccount",
                            "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole",
                            "ClusterRoleBinding", "ConfigMap", "Deployment"])
    assert (REPO / "crds" / KUSTOMIZATION_FILENAME).read_text() == render_kustomization_yaml()
    crds = {o["metadata"]["name"] for o in rendered() if o["kind"] == "CustomResourceDefinition"}
    assert crds == {"inferenceservices.serving.inferkube.dev", "inferencequotas.serving.inferkube.dev"}


def test_kubectl_apply_f_crds_reads_only_crds() -> None:
    """`kubectl apply -f crds/` reads every *.yaml, *.yml and *.json there: each must be a CRD."""
    files = [p for p in (REPO / "crds").iterdir() if p.suffix in (".yaml", ".yml", ".json")]
    assert files
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert [d["kind"] for d in docs] == ["CustomResourceDefinition"] * len(docs), path.name


@pytest.mark.parametrize("version", [OLDEST_K8S, NEWEST_K8S])
def test_every_install_object_passes_strict_schema(version: str) -> None:
    for obj in rendered():
        validate_k8s(obj, version)


def _allowed(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_rbac_allows_exactly_what_the_operator_does() -> None:
    rules = one("ClusterRole", "inferkube-operator")["rules"]
    for kind in kinds.WATCHED:
        group, plural = kind.group, kind.plural
        verbs = _allowed(rules, group, plural)
        assert {"list", "watch"} <= verbs, plural
        if plural == "pods":
            assert verbs == {"list", "watch"}
        elif plural == "jobs":
            assert verbs == {"list", "watch", "create", "delete"}, "Jobs are created once, never patched"
        elif plural == "persistentvolumeclaims":
            assert verbs == {"list", "watch", "create"}, "claims are immutable and hold data: never deleted"
        elif plural in ("horizontalpodautoscalers", "scaledobjects", "servicemonitors", "prometheusrules", "configmaps"):
            assert verbs == {"list", "watch", "create", "patch", "delete"}, plural
        else:
            assert verbs == {"list", "watch", "create", "patch"}, plural
    assert _allowed(rules, "serving.inferkube.dev", "inferenceservices") == {"list", "watch"}, "never writes spec"
    assert _allowed(rules, "serving.inferkube.dev", "inferenceservices/status") == {"patch"}
    assert _allowed(rules, "serving.inferkube.dev", "inferenceservices/finalizers") == {"update"}
    assert _allowed(rules, "", "pods/log") == {"get"}
    assert _allowed(rules, "serving.inferkube.dev", "inferencequotas") == {"list", "watch"}, "quotas are the platform's"
    assert _allowed(rules, "serving.inferkube.dev", "inferencequotas/status") == {"patch"}
    assert {"list", "watch"} <= _allowed(rules, "", "namespaces"), "namespaceSelector needs namespace labels"
    assert not any("*" in r["verbs"] for r in rules)
    deletable = {r for rule in rules if "delete" in rule["verbs"] for r in rule["resources"]}
    assert deletable == {kind.plural for kind in kinds.PRUNABLE}, "delete only what reconcile prunes"
    binding = one("ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == one("Deployment")["metadata"]["namespace"]


def test_operator_deployment_is_single_restricted_and_probed() -> None:
    dep = one("Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    liveness = container["livenessProbe"]["httpGet"]
    assert f":8080{liveness['path']}" in container["args"][container["args"].index("--liveness") + 1]
    assert container["resources"]["requests"]["memory"]


def test_settings_configmap_is_what_the_operator_loads(tmp_path: Path) -> None:
    text = one("ConfigMap")["data"]["settings.yaml"]
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    assert load_settings(path) == OperatorSettings()


def test_the_operator_may_watch_its_settings_configmap_and_nothing_else() -> None:
    rules = one("ClusterRole", "inferkube-operator")["rules"]
    configmap = one("ConfigMap")["metadata"]["name"]
    [rule] = [r for r in rules if "configmaps" in r["resources"] and {"list", "watch"} & set(r["verbs"])]
    assert (rule["apiGroups"], rule["verbs"], rule["resourceNames"]) == ([""], ["list", "watch"], [configmap])
    others = [r for r in rules if "configmaps" in r["resources"] and r is not rule]
    assert all(not {"get", "list", "watch"} & set(r["verbs"]) for r in others), "tenant policies are never read"
    env = {e["name"]: e for e in one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[settings.CONFIGMAP_ENV]["value"] == configmap == settings.DEFAULT_CONFIGMAP
    assert env[settings.NAMESPACE_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert one("ConfigMap")["metadata"]["namespace"] == one("Deployment")["metadata"]["namespace"]
    assert _allowed(rules, "", kinds.EVENT.plural) == {"create"}


def test_events_name_the_operator_pod() -> None:
    env = {e["name"]: e for e in one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[events.POD_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def _aggregated_into(role: str) -> list[dict[str, Any]]:
    """Rules the built-in ClusterRole `role` (view, edit, admin) picks up from our aggregated roles."""
    return [rule for o in rendered() if o["kind"] == "ClusterRole"
            and (o["metadata"].get("labels") or {}).get(AGGREGATE + role) == "true" for rule in o["rules"]]


def test_application_teams_edit_services_but_not_quotas() -> None:
    group = "serving.inferkube.dev"
    for role in ("edit", "admin"):
        rules = _aggregated_into(role)
        assert {"create", "update", "patch", "delete", "get", "list", "watch"} <= _allowed(rules, group, "inferenceservices")
        assert {"update", "patch"} <= _allowed(rules, group, "inferenceservices/scale")
        assert _allowed(rules, group, "inferencequotas") == {"get", "list", "watch"}, f"{role} must not write quotas"
        assert _allowed(rules, group, "inferenceservices/status") == {"get", "list", "watch"}, "status is the operator's"
    view = _aggregated_into("view")
    assert _allowed(view, group, "inferenceservices") == {"get", "list", "watch"}
    assert _allowed(view, group, "inferencequotas") == {"get", "list", "watch"}


def test_the_platform_role_manages_quotas_and_is_not_aggregated() -> None:
    role = one("ClusterRole", "inferkube-quota-admin")
    assert not any(k.startswith(AGGREGATE) for k in (role["metadata"].get("labels") or {}))
    assert {"create", "update", "patch", "delete"} <= _allowed(role["rules"], "serving.inferkube.dev", "inferencequotas")
    assert not {"create", "update", "patch", "delete"} & _allowed(role["rules"], "serving.inferkube.dev", "inferenceservices")
