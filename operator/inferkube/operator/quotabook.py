"""The operator's quota state: InferenceQuotas and Namespaces as the watches report them, and the last decisions.

Decisions are global (one service's admission depends on every older service), so they are computed in
one pass over all services (``recompute``) rather than per reconcile; per-service facts and selector
matches are cached by resourceVersion, so a pass over 500 services is mostly integer arithmetic. A
reconcile reads its service's decision; a service some quota selects but no pass has decided yet is
``pending`` and waits for the next pass (which schedules it). No I/O here: the reconciler drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from inferkube.api.quota import InferenceQuotaStatus
from inferkube.operator.quota import (
    Decisions,
    Key,
    QuotaFacts,
    ServiceDecision,
    ServiceFacts,
    decide,
    selects,
    service_facts,
)


def _rv(body: dict[str, Any]) -> int:
    """resourceVersion as a number (0 when absent or not numeric)."""
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def service_signature(body: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What of an InferenceService a decision depends on (spec via generation, labels, age), not its status."""
    if body is None:
        return None
    meta = body["metadata"]
    return (meta.get("uid"), meta.get("generation"), meta.get("resourceVersion") if meta.get("generation") is None else None,
            meta.get("creationTimestamp"), tuple(sorted((meta.get("labels") or {}).items())))


@dataclass
class _Cached:
    """One service's parsed facts and the quotas selecting it, with what they were computed from."""

    signature: tuple[Any, ...]
    facts: ServiceFacts | None
    version: int = -1
    names: list[str] = field(default_factory=list)


@dataclass
class QuotaBook:
    """Quotas, namespace labels, cached service facts and the decisions of the last pass."""

    quotas: dict[str, QuotaFacts] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)   # each quota's status as last seen
    invalid: dict[str, str] = field(default_factory=dict)               # quota name -> why its spec does not parse
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    decisions: Decisions = field(default_factory=Decisions)
    dirty: bool = False
    passes: int = 0
    _version: int = 0
    _cache: dict[Key, _Cached] = field(default_factory=dict)
    _rvs: dict[str, int] = field(default_factory=dict)  # resourceVersion of each quota's stored copy
    _decided: dict[Key, tuple[Any, int]] = field(default_factory=dict)  # what the last pass decided each service on

    @property
    def active(self) -> bool:
        """True when any InferenceQuota exists (otherwise the book costs nothing)."""
        return bool(self.quotas)

    def observe_quota(self, event_type: str | None, body: dict[str, Any]) -> bool:
        """Record an InferenceQuota event; True when decisions must be recomputed (spec, not status, changed)."""
        meta = body["metadata"]
        name = meta["name"]
        if event_type == "DELETED":
            self.statuses.pop(name, None)
            self.invalid.pop(name, None)
            self._rvs.pop(name, None)
            return self._set_quota(name, None)
        rv = _rv(body)
        if rv and rv < self._rvs.get(name, 0):
            return False  # an older copy than one we hold (a watch event behind our own write's response)
        self._rvs[name] = rv
        self.statuses[name] = body.get("status") or {}
        try:
            facts = QuotaFacts.of(body)
        except ValidationError as exc:
            self.invalid[name] = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return self._set_quota(name, None)
        self.invalid.pop(name, None)
        return self._set_quota(name, facts)

    def _set_quota(self, name: str, facts: QuotaFacts | None) -> bool:
        if self.quotas.get(name) == facts:
            return False
        if facts is None:
            self.quotas.pop(name, None)
        else:
            self.quotas[name] = facts
        self._version += 1
        self.dirty = True
        return True

    def observe_namespace(self, event_type: str | None, body: dict[str, Any]) -> bool:
        """Record a Namespace's labels; True when decisions must be recomputed."""
        name = body["metadata"]["name"]
        labels = None if event_type == "DELETED" else dict(body["metadata"].get("labels") or {})
        if self.namespaces.get(name) == labels:
            return False
        if labels is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = labels
        changed = any(q.spec.selector.namespace_selector is not None for q in self.quotas.values())
        self.dirty = self.dirty or changed
        return changed

    def selection(self, key: Key, body: dict[str, Any], running: int) -> tuple[ServiceFacts | None, list[str]]:
        """A service's facts and the names of the quotas selecting it, cached until the service, its
        namespace labels, its running replicas or any quota change."""
        labels = self.namespaces.get(key[0])
        signature = (service_signature(body), running, tuple(sorted(labels.items())) if labels is not None else None)
        cached = self._cache.get(key)
        if cached is None or cached.signature != signature:
            cached = _Cached(signature, service_facts(body, labels, running))
            self._cache[key] = cached
        if cached.version != self._version:
            f = cached.facts
            cached.names = [q.name for q in self.quotas.values() if selects(q.spec, f)] if f is not None else []
            cached.version = self._version
        return cached.facts, cached.names

    def pending(self, key: Key, body: dict[str, Any], running: int) -> bool:
        """True when some quota selects the service and the last pass did not decide it as it is now (new, or its
        spec, labels or namespace labels changed, or it runs more than it was granted). Changes elsewhere need no
        wait: the pass they cause reschedules every service whose decision they change. Running up to what was
        granted (our own apply of the decision) changes no decision: a service is charged its grant either way."""
        if not self.quotas or not self.selection(key, body, running)[1]:
            return False
        decided = self.decisions.services.get(key)
        return decided is None or self._decided.get(key) != self._decided_on(key) or running > decided.replicas

    def _decided_on(self, key: Key) -> tuple[Any, ...]:
        """What of a service a decision rests on, besides its running replicas: spec/labels/age, namespace labels, quotas."""
        cached = self._cache[key]
        service, _running, namespace_labels = cached.signature
        return (service, namespace_labels, cached.version)

    def decision(self, key: Key) -> ServiceDecision | None:
        """The last pass's decision for a service; None when no quota selects it."""
        return self.decisions.services.get(key) if self.quotas else None

    def recompute(self, services: Mapping[Key, dict[str, Any]], running: Callable[[Key], int]) -> set[Key]:
        """One pass over every service; the keys whose decision changed (appeared, went away or differs)."""
        self.passes += 1
        self.dirty = False
        for key in [k for k in self._cache if k not in services]:
            del self._cache[key]
            self._decided.pop(key, None)
        facts: list[ServiceFacts] = []
        selected: dict[Key, list[str]] = {}
        for key, body in services.items():
            if body["metadata"].get("deletionTimestamp"):
                continue
            f, names = self.selection(key, body, running(key))
            if f is not None and names:
                facts.append(f)
                selected[key] = names
                self._decided[key] = self._decided_on(key)
        before = self.decisions.services
        self.decisions = decide(facts, list(self.quotas.values()), selected) if self.quotas else Decisions()
        after = self.decisions.services
        return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}

    def quota_status(self, name: str) -> InferenceQuotaStatus | None:
        """The status the last pass computed for a quota (None for an unknown or invalid one)."""
        return self.decisions.quotas.get(name)
