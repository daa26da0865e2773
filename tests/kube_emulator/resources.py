"""Served API resources of the emulator: the built-in table, CRD-derived resources and discovery documents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    """One served resource (group/version/plural) and what the emulator knows about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status: bool = False
    scale: bool = False
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # `kubectl get all`, `kubectl get inferkube`
    # For CRD-backed resources: the version's openAPIV3Schema and the scale subresource paths.
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    scale_paths: dict[str, str] | None = field(default=None, compare=False, hash=False)
    printer_columns: list[dict[str, Any]] | None = field(default=None, compare=False, hash=False)
    crd_name: str | None = None

    @property
    def api_version(self) -> str:
        """The apiVersion string of objects of this resource."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """The storage key: objects are shared across versions of one group/plural."""
        return (self.group, self.plural)


def _b(group: str, version: str, plural: str, kind: str, namespaced: bool = True, **kw: Any) -> Resource:
    return Resource(group, version, plural, kind, namespaced, singular=kind.lower(), **kw)


BUILTINS: list[Resource] = [
    _b("", "v1", "namespaces", "Namespace", False, status=True, short_names=("ns",)),
    _b("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _b("", "v1", "secrets", "Secret"),
    _b("", "v1", "services", "Service", status=True, short_names=("svc",), categories=("all",)),
    _b("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _b("", "v1", "pods", "Pod", status=True, short_names=("po",), categories=("all",)),
    _b("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", status=True, short_names=("pvc",)),
    _b("", "v1", "events", "Event", short_names=("ev",)),
    _b("", "v1", "resourcequotas", "ResourceQuota", status=True, short_names=("quota",)),
    _b("", "v1", "nodes", "Node", False, status=True, short_names=("no",)),
    _b("apps", "v1", "deployments", "Deployment", status=True, scale=True, short_names=("deploy",), categories=("all",)),
    _b("apps", "v1", "statefulsets", "StatefulSet", status=True, scale=True, short_names=("sts",), categories=("all",)),
    _b("apps", "v1", "replicasets", "ReplicaSet", status=True, scale=True, short_names=("rs",), categories=("all",)),
    _b("batch", "v1", "jobs", "Job", status=True, categories=("all",)),
    _b(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        status=True,
        short_names=("hpa",),
        categories=("all",),
    ),
    _b("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", status=True, short_names=("pdb",)),
    _b("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    _b("networking.k8s.io", "v1", "ingresses", "Ingress", status=True, short_names=("ing",)),
    _b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        status=True,
        short_names=("crd", "crds"),
    ),
    _b("coordination.k8s.io", "v1", "leases", "Lease"),
    _b("events.k8s.io", "v1", "events", "Event", short_names=("ev",)),
    _b("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
]


def resources_from_crd(crd: dict[str, Any]) -> list[Resource]:
    """All served versions of a CustomResourceDefinition as Resources."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    out: list[Resource] = []
    for ver in spec.get("versions", []):
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        scale = subs.get("scale")
        out.append(
            Resource(
                group=spec["group"],
                version=ver["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                status="status" in subs,
                scale=scale is not None,
                singular=names.get("singular", names["kind"].lower()),
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
                scale_paths=scale,
                printer_columns=ver.get("additionalPrinterColumns"),
                crd_name=crd["metadata"]["name"],
            )
        )
    return out


def storage_version(crd: dict[str, Any]) -> str:
    """The storage version of a CRD (the first one if none is marked)."""
    versions = crd.get("spec", {}).get("versions", [])
    for ver in versions:
        if ver.get("storage"):
            return str(ver["name"])
    return str(versions[0]["name"]) if versions else "v1"


class Registry:
    """The set of resources currently served, indexed for routing and discovery."""

    def __init__(self) -> None:
        self.by_gvp: dict[tuple[str, str, str], Resource] = {}
        self.preferred: dict[str, str] = {}
        for res in BUILTINS:
            self.add(res)

    def add(self, res: Resource) -> None:
        """Serve a resource."""
        self.by_gvp[(res.group, res.version, res.plural)] = res
        self.preferred.setdefault(res.group, res.version)

    def remove_crd(self, crd_name: str) -> list[Resource]:
        """Stop serving every resource of a CRD; return what was removed."""
        gone = [r for r in self.by_gvp.values() if r.crd_name == crd_name]
        for res in gone:
            del self.by_gvp[(res.group, res.version, res.plural)]
        for group in {r.group for r in gone}:
            left = [r.version for r in self.by_gvp.values() if r.group == group]
            if left:
                self.preferred[group] = left[0]
            else:
                self.preferred.pop(group, None)
        return gone

    def find(self, group: str, version: str, plural: str) -> Resource | None:
        """The resource served at group/version/plural, or None."""
        return self.by_gvp.get((group, version, plural))

    def by_kind(self, ref: str) -> Resource:
        """Look a resource up by Kind, plural, plural.group, apiVersion/Kind or short name."""
        api_version, _, kind = ref.rpartition("/") if "/" in ref else ("", "", ref)
        candidates = []
        for res in self.by_gvp.values():
            names = {
                res.kind,
                res.plural,
                res.singular,
                *res.short_names,
                f"{res.plural}.{res.group}" if res.group else res.plural,
            }
            if kind in names and (not api_version or api_version == res.api_version):
                candidates.append(res)
        if not candidates:
            raise KeyError(f"no served resource matches {ref!r}")
        # Prefer the core Event over events.k8s.io, and the preferred version of a group.
        candidates.sort(key=lambda r: (r.group != "" and r.kind == "Event", self.preferred.get(r.group) != r.version))
        return candidates[0]

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions (the core group is '')."""
        out: dict[str, list[str]] = {}
        for res in self.by_gvp.values():
            versions = out.setdefault(res.group, [])
            if res.version not in versions:
                versions.append(res.version)
        return out

    def api_versions(self) -> dict[str, Any]:
        """The /api document."""
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }

    def _group_doc(self, group: str, versions: list[str]) -> dict[str, Any]:
        pref = self.preferred.get(group, versions[0])
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{pref}", "version": pref},
        }

    def api_groups(self) -> dict[str, Any]:
        """The /apis document."""
        groups = [self._group_doc(g, vs) for g, vs in sorted(self.groups().items()) if g]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_group(self, group: str) -> dict[str, Any] | None:
        """The /apis/<group> document."""
        versions = self.groups().get(group)
        if not versions or not group:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, versions)}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        """The /api/v1 or /apis/<group>/<version> document."""
        items = [r for r in self.by_gvp.values() if r.group == group and r.version == version]
        if not items:
            return None
        resources: list[dict[str, Any]] = []
        for res in items:
            resources.append(
                {
                    "name": res.plural,
                    "singularName": res.singular,
                    "namespaced": res.namespaced,
                    "kind": res.kind,
                    "verbs": VERBS,
                    "shortNames": list(res.short_names),
                    **({"categories": list(res.categories)} if res.categories else {}),
                }
            )
            if res.status:
                resources.append(
                    {
                        "name": f"{res.plural}/status",
                        "singularName": "",
                        "namespaced": res.namespaced,
                        "kind": res.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if res.scale:
                resources.append(
                    {
                        "name": f"{res.plural}/scale",
                        "singularName": "",
                        "namespaced": res.namespaced,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": ["get", "patch", "update"],
                    }
                )
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
