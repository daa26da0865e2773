"""The operator's view of the cluster, as the watches report it, and the facts builders read from it.

``World`` holds the InferenceServices, their children and the served optional APIs; ``Children`` is one
InferenceService's snapshot of it; ``observe`` turns that snapshot into the builders' ``Observed`` input.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.api.status import CachePhase
from inferkube.operator import kinds, names
from inferkube.operator.inputs import Observed, ServiceMeta

Key = tuple[str, str]  # (namespace, InferenceService name)


def _rv(body: dict[str, Any]) -> int:
    """resourceVersion as a number for ordering watch events (0 when not numeric)."""
    try:
        return int(body.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class Children:
    """The live children of one InferenceService, as the watches last saw them."""

    by_kind: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every live child of a kind."""
        return self.by_kind.get(kind, [])

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The live child of a kind and name, if any."""
        return next((o for o in self.all(kind) if o["metadata"]["name"] == name), None)

    def drop(self, kind: str, name: str) -> None:
        """Forget a child we just deleted."""
        self.by_kind[kind] = [o for o in self.all(kind) if o["metadata"]["name"] != name]

    def put(self, obj: dict[str, Any]) -> None:
        """Record a child as written (the API server's response), replacing the older copy."""
        name = obj["metadata"]["name"]
        items = [o for o in self.all(obj["kind"]) if o["metadata"]["name"] != name]
        self.by_kind[obj["kind"]] = [*items, obj]


@dataclass
class World:
    """InferenceServices, their children and the served optional APIs, as the watches report them."""

    services: dict[Key, dict[str, Any]] = field(default_factory=dict)
    children: dict[Key, dict[str, dict[str, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    apis: set[str] = field(default_factory=set)

    def observe_service(self, event_type: str | None, body: dict[str, Any]) -> Key | None:
        """Record an InferenceService event; the key to reconcile, or None."""
        meta = body["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        if event_type == "DELETED":
            self.services.pop(key, None)
            return None
        current = self.services.get(key)
        if current is not None and _rv(body) and _rv(body) < _rv(current):
            return None  # an older copy than one we already hold (e.g. our own write's response)
        self.services[key] = body
        return key

    def observe_child(self, event_type: str | None, body: dict[str, Any]) -> Key | None:
        """Record a child (or pod) event; the owning InferenceService's key, or None."""
        meta = body["metadata"]
        owner = (meta.get("labels") or {}).get(contract.LABEL_ISVC)
        if not owner:
            return None
        key = (meta.get("namespace", "default"), owner)
        if event_type == "DELETED":
            by_kind = self.children.get(key)
            if by_kind is not None:
                by_kind.get(body["kind"], {}).pop(meta["name"], None)
                if not any(by_kind.values()):
                    del self.children[key]
        else:
            kind_map = self.children[key][body["kind"]]
            current = kind_map.get(meta["name"])
            if current is not None and _rv(body) and _rv(body) < _rv(current):
                return None
            kind_map[meta["name"]] = body
        return key if key in self.services else None

    def observe_crd(self, event_type: str | None, name: str, body: dict[str, Any]) -> bool:
        """Record an optional CRD; True when the set of served optional APIs changed."""
        kind = kinds.OPTIONAL_APIS.get(name)
        if kind is None:
            return False
        conditions = (body.get("status") or {}).get("conditions") or []
        established = any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
        served = event_type != "DELETED" and (established or not conditions)
        before = set(self.apis)
        (self.apis.add if served else self.apis.discard)(kind)
        return before != self.apis

    def known_child(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The copy of a child (same kind and name) the world holds now, if any."""
        meta = body["metadata"]
        owner = (meta.get("labels") or {}).get(contract.LABEL_ISVC)
        kinds_of = self.children.get((meta.get("namespace", "default"), owner)) if owner else None
        return kinds_of.get(body.get("kind", ""), {}).get(meta["name"]) if kinds_of else None

    def replicas_running(self, key: Key) -> int:
        """Replicas the live Deployment of a service runs (what a quota never takes away)."""
        kinds_of = self.children.get(key)
        return live_replicas(kinds_of.get(kinds.DEPLOYMENT.kind, {}).get(key[1])) if kinds_of else 0

    def children_of(self, key: Key) -> Children:
        """A snapshot of one InferenceService's live children."""
        return Children({kind: list(objs.values()) for kind, objs in self.children.get(key, {}).items()})


def live_replicas(deployment: dict[str, Any] | None) -> int:
    """Replicas a live Deployment runs (its spec.replicas; 0 when there is none)."""
    if deployment is None:
        return 0
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def condition_of(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """A condition of a watched object's status by type."""
    if obj is None:
        return None
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None)


def job_state(job: dict[str, Any] | None) -> CachePhase:
    """Pending, Downloading, Ready or Failed for a download Job."""
    if job is None:
        return "Pending"
    status = job.get("status") or {}
    if (condition_of(job, "Complete") or {}).get("status") == "True" or status.get("succeeded", 0) > 0:
        return "Ready"
    if (condition_of(job, "Failed") or {}).get("status") == "True":
        return "Failed"
    return "Downloading" if status.get("active", 0) > 0 else "Pending"


def download_job(spec: InferenceServiceSpec, meta: ServiceMeta, children: Children) -> dict[str, Any] | None:
    """The live download Job of the wanted cache directory, if any."""
    return children.get(kinds.JOB.kind, names.download_job_name(meta, names.cache_key(spec)))


def serving_cache_key(spec: InferenceServiceSpec, meta: ServiceMeta, children: Children) -> str | None:
    """The cache directory replicas may serve from: the wanted one once downloaded, else the one in use."""
    if not names.uses_cache(spec):
        return None
    if job_state(download_job(spec, meta, children)) == "Ready":
        return names.cache_key(spec)
    deployment = children.get(kinds.DEPLOYMENT.kind, meta.name)
    if deployment is not None:
        return (deployment["metadata"].get("annotations") or {}).get(contract.ANNOTATION_CACHE_KEY)
    return None


def observe(spec: InferenceServiceSpec, meta: ServiceMeta, children: Children, apis: set[str]) -> Observed:
    """The facts builders need, from live children and the set of served optional APIs."""
    deployment = children.get(kinds.DEPLOYMENT.kind, meta.name)
    return Observed(
        serving_cache_key=serving_cache_key(spec, meta, children),
        deployment_replicas=live_replicas(deployment) if deployment is not None else None,
        monitoring_api=kinds.SERVICE_MONITOR.kind in apis,
        keda_api=kinds.SCALED_OBJECT.kind in apis,
        alerting_api=kinds.PROMETHEUS_RULE.kind in apis,
    )
