"""Quota decisions: which InferenceServices an InferenceQuota admits, and with how many replicas. Pure.

Rules (docs/quotas.md):
- a service counts at its worst case: fixed replicas, or autoscaling.maxReplicas, x GPUs per replica;
- what a service runs now is never taken away (like ResourceQuota): it is charged first, even when a
  lowered quota no longer covers it (the quota is then OverBudget);
- what is left is handed out oldest first (creationTimestamp, then namespace/name): a fixed-replica
  service gets all it asks for or nothing more; an autoscaled one may get a smaller maxReplicas;
- every quota selecting a service must admit it. Same inputs, same decisions: no flapping;
- a quota's status lists at most STATUS_SERVICES_MAX services (held-back ones first) and counts all of them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from inferkube.api.quota import (
    STATUS_SERVICES_MAX,
    InferenceQuotaSpec,
    InferenceQuotaStatus,
    LabelSelector,
    QuotaServiceStatus,
    QuotaUsage,
)
from inferkube.api.spec import InferenceServiceSpec
from inferkube.api.status import Condition
from inferkube.api.tenantpolicy import TenantPolicy, merge_policies

Key = tuple[str, str]  # (namespace, name)
ADMITTED, CLAMPED, BLOCKED, REFUSED = "Admitted", "MaxReplicasClamped", "ScaleUpBlocked", "QuotaExceeded"


@dataclass(frozen=True)
class ServiceFacts:
    """What a quota decision needs to know about one InferenceService."""

    namespace: str
    name: str
    created: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] | None  # None: the Namespace is not known (a namespaceSelector cannot match)
    model_source: str
    accelerator: str | None
    gpus_per_replica: int
    replicas: int                # fixed replicas, or autoscaling.maxReplicas: the worst case
    min_replicas: int | None     # autoscaling.minReplicas; None for fixed replicas
    running: int = 0             # replicas it runs now (the live Deployment's spec.replicas); never taken away

    @property
    def key(self) -> Key:
        """(namespace, name)."""
        return (self.namespace, self.name)

    @property
    def autoscaled(self) -> bool:
        """True when an autoscaler chooses the replica count."""
        return self.min_replicas is not None


def service_facts(body: dict[str, Any], namespace_labels: Mapping[str, str] | None, running: int) -> ServiceFacts | None:
    """Facts of an InferenceService object; None when its spec does not parse (it is refused elsewhere)."""
    meta = body.get("metadata") or {}
    try:
        spec = InferenceServiceSpec.model_validate(body.get("spec"))
    except ValidationError:
        return None
    auto = spec.autoscaling
    return ServiceFacts(
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        created=meta.get("creationTimestamp") or "~",  # unknown age sorts last
        labels=meta.get("labels") or {},
        namespace_labels=namespace_labels,
        model_source=spec.model.source,
        accelerator=spec.resources.accelerator,
        gpus_per_replica=spec.resources.gpus,
        replicas=spec.max_possible_replicas,
        min_replicas=None if auto is None else min(auto.min_replicas, auto.max_replicas),
        running=max(0, running),
    )


@dataclass(frozen=True)
class QuotaFacts:
    """One InferenceQuota as the decision sees it."""

    name: str
    spec: InferenceQuotaSpec
    generation: int | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> QuotaFacts:
        """The facts of an InferenceQuota object; pydantic's ValidationError when its spec does not parse."""
        meta = body["metadata"]
        return cls(meta["name"], InferenceQuotaSpec.model_validate(body.get("spec") or {}), meta.get("generation"))


def label_selector_matches(selector: LabelSelector | None, labels: Mapping[str, str] | None) -> bool:
    """metav1.LabelSelector semantics; an unset selector matches everything, unknown labels match nothing."""
    if selector is None:
        return True
    if labels is None:
        return False
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        ok = {
            "In": present and labels.get(req.key) in req.values,
            "NotIn": not present or labels.get(req.key) not in req.values,
            "Exists": present,
            "DoesNotExist": not present,
        }[req.operator]
        if not ok:
            return False
    return True


def selects(spec: InferenceQuotaSpec, svc: ServiceFacts) -> bool:
    """True when every part of the quota's selector matches the service."""
    sel = spec.selector
    if sel.namespaces is not None and svc.namespace not in sel.namespaces:
        return False
    if sel.models and not any(fnmatch.fnmatchcase(svc.model_source, glob) for glob in sel.models):
        return False
    return label_selector_matches(sel.service_selector, svc.labels) and (
        sel.namespace_selector is None or label_selector_matches(sel.namespace_selector, svc.namespace_labels)
    )


@dataclass(frozen=True)
class ServiceDecision:
    """What the quotas selecting one service allow it."""

    quotas: tuple[str, ...]
    reason: str                 # Admitted, MaxReplicasClamped, ScaleUpBlocked or QuotaExceeded
    replicas: int               # fixed: replicas it may run; autoscaled: its (possibly clamped) maxReplicas
    min_replicas: int | None = None
    message: str = ""
    policy: TenantPolicy | None = None

    @property
    def admitted(self) -> bool:
        """False when it may run no replicas at all."""
        return self.reason != REFUSED

    @property
    def limited(self) -> bool:
        """True when a quota holds it below its spec (QuotaExceeded=True)."""
        return self.reason != ADMITTED


@dataclass
class _Budget:
    """What is left of one quota while decisions are handed out."""

    quota: QuotaFacts
    gpus: int | None
    replicas: int | None
    accelerators: dict[str, int]
    used: QuotaUsage = field(default_factory=QuotaUsage)

    @classmethod
    def of(cls, quota: QuotaFacts) -> _Budget:
        limits = quota.spec.limits
        return cls(quota, limits.gpus, limits.replicas, dict(limits.gpus_per_accelerator))

    def _dimensions(self, svc: ServiceFacts) -> list[tuple[str, int | None, int]]:
        """(what, left, per replica) for every limit that applies to svc."""
        dims: list[tuple[str, int | None, int]] = [("replicas", self.replicas, 1)]
        if svc.gpus_per_replica:
            dims.append(("GPUs", self.gpus, svc.gpus_per_replica))
            if svc.accelerator in self.accelerators:
                dims.append((f"{svc.accelerator} GPUs", self.accelerators[svc.accelerator], svc.gpus_per_replica))
        return dims

    def fits(self, svc: ServiceFacts, wanted: int) -> int:
        """How many of `wanted` more replicas of svc fit."""
        room = wanted
        for _, left, per in self._dimensions(svc):
            if left is not None:
                room = min(room, max(0, left) // per)
        return room

    def shortfall(self, svc: ServiceFacts, wanted: int) -> str:
        """'needs 4 GPUs, 2 of 16 left under InferenceQuota team-search' for the first limit too small."""
        limits = self.quota.spec.limits
        totals = {"replicas": limits.replicas, "GPUs": limits.gpus}
        for what, left, per in self._dimensions(svc):
            if left is not None and left < wanted * per:
                total = totals.get(what, self.quota.spec.limits.gpus_per_accelerator.get(str(svc.accelerator)))
                return f"needs {wanted * per} {what}, {max(0, left)} of {total} left under InferenceQuota {self.quota.name}"
        return ""

    def charge(self, svc: ServiceFacts, replicas: int) -> None:
        """Count replicas of svc against the quota."""
        gpus = replicas * svc.gpus_per_replica
        self.used.replicas += replicas
        self.used.gpus += gpus
        if self.replicas is not None:
            self.replicas -= replicas
        if self.gpus is not None:
            self.gpus -= gpus
        if gpus and svc.accelerator:
            self.used.gpus_per_accelerator[svc.accelerator] = self.used.gpus_per_accelerator.get(svc.accelerator, 0) + gpus
            if svc.accelerator in self.accelerators:
                self.accelerators[svc.accelerator] -= gpus


@dataclass
class Decisions:
    """Every service's decision (only services some quota selects) and every quota's status."""

    services: dict[Key, ServiceDecision] = field(default_factory=dict)
    quotas: dict[str, InferenceQuotaStatus] = field(default_factory=dict)


def _order(svc: ServiceFacts) -> tuple[str, str, str]:
    """Oldest first, then namespace/name: the order leftover quota is handed out in."""
    return (svc.created, svc.namespace, svc.name)


def _grant(svc: ServiceFacts, kept: int, budgets: list[_Budget]) -> tuple[str, int, str]:
    """(reason, replicas, message) for svc on top of the kept replicas; charges what it grants."""
    wanted = svc.replicas - kept
    if wanted <= 0:
        return ADMITTED, svc.replicas, ""
    room = min(b.fits(svc, wanted) for b in budgets)
    blocker = next(b for b in sorted(budgets, key=lambda b: b.quota.name) if b.fits(svc, wanted) == room)
    why = blocker.shortfall(svc, wanted)
    if room == wanted or (svc.autoscaled and kept + room >= 1):
        for b in budgets:
            b.charge(svc, room)
        if room == wanted:
            return ADMITTED, svc.replicas, ""
        return CLAMPED, kept + room, f"maxReplicas {svc.replicas} clamped to {kept + room}: {why}"
    if kept > 0:
        return BLOCKED, kept, f"scale-up from {kept} to {svc.replicas} replicas {why}; the {kept} running replicas stay"
    return REFUSED, 0, why


def decide(services: Iterable[ServiceFacts], quotas: Iterable[QuotaFacts],
           selected: Mapping[Key, list[str]] | None = None) -> Decisions:
    """Decisions for every service some quota selects, and every quota's status (without timestamps).

    `selected` may carry precomputed quota names per service (the caller caches selector matches).
    """
    budgets = {q.name: _Budget.of(q) for q in quotas}
    ordered = sorted(services, key=_order)
    matched: dict[Key, list[_Budget]] = {}
    for svc in ordered:
        found = selected.get(svc.key, []) if selected is not None else [n for n, b in budgets.items() if selects(b.quota.spec, svc)]
        selecting = [budgets[n] for n in sorted(found) if n in budgets]
        if selecting:
            matched[svc.key] = selecting
    kept: dict[Key, int] = {}
    for svc in ordered:  # pass 1: what runs stays, whatever the limits say now
        if svc.key in matched:
            kept[svc.key] = min(svc.replicas, svc.running)
            for budget in matched[svc.key]:
                budget.charge(svc, kept[svc.key])
    out = Decisions()
    entries: dict[str, list[QuotaServiceStatus]] = {name: [] for name in budgets}
    policies: dict[tuple[str, ...], TenantPolicy | None] = {}  # one merge per set of quotas, not per service
    for svc in ordered:  # pass 2: the rest, oldest first
        mine = matched.get(svc.key)
        if not mine:
            continue
        reason, replicas, message = _grant(svc, kept[svc.key], mine)
        names = tuple(b.quota.name for b in mine)
        if names not in policies:
            policies[names] = merge_policies([(b.quota.name, b.quota.spec.tenants) for b in mine if b.quota.spec.tenants])
        min_replicas = None if svc.min_replicas is None else min(svc.min_replicas, max(1, replicas))
        out.services[svc.key] = ServiceDecision(names, reason, replicas, min_replicas, message, policies[names])
        for name in names:  # model_construct: these are built from checked values, hundreds per pass
            entries[name].append(QuotaServiceStatus.model_construct(
                namespace=svc.namespace, name=svc.name, gpus=replicas * svc.gpus_per_replica, replicas=replicas,
                admitted=reason != REFUSED, reason=reason))
    for name, budget in budgets.items():
        out.quotas[name] = _quota_status(budget, entries[name])
    return out


_LISTING_RANK = {REFUSED: 0, CLAMPED: 1, BLOCKED: 1}  # what a platform team must see first; admitted ones last


def listed_services(services: list[QuotaServiceStatus]) -> list[QuotaServiceStatus]:
    """The entries status.services shows, from all in decision order: refused first, then clamped or blocked,
    then admitted, each group in decision order (a stable sort); at most STATUS_SERVICES_MAX."""
    return sorted(services, key=lambda e: _LISTING_RANK.get(e.reason, 2))[:STATUS_SERVICES_MAX]


def _quota_status(budget: _Budget, services: list[QuotaServiceStatus]) -> InferenceQuotaStatus:
    """One quota's status from every selected service's entry in decision order: usage, the bounded list with
    its counts, Ready and OverBudget."""
    quota, used = budget.quota, budget.used
    limits = quota.spec.limits
    over = [f"{used.gpus} of {limits.gpus} GPUs"] if limits.gpus is not None and used.gpus > limits.gpus else []
    if limits.replicas is not None and used.replicas > limits.replicas:
        over.append(f"{used.replicas} of {limits.replicas} replicas")
    for acc, cap in sorted(limits.gpus_per_accelerator.items()):
        if used.gpus_per_accelerator.get(acc, 0) > cap:
            over.append(f"{used.gpus_per_accelerator[acc]} of {cap} {acc} GPUs")
    refused = sum(1 for s in services if not s.admitted)
    limited = sum(1 for s in services if s.reason in (CLAMPED, BLOCKED))
    listed = listed_services(services)
    gen = quota.generation
    conditions = [
        Condition(type="Ready", status="True", reason="Enforced", observed_generation=gen,
                  message=f"{len(services)} InferenceServices selected, {refused} refused"),
        Condition(type="OverBudget", status="True", reason="UsageAboveLimit", observed_generation=gen,
                  message=f"running replicas use {', '.join(over)}: nothing is stopped; new services and scale-ups wait")
        if over else Condition(type="OverBudget", status="False", reason="WithinLimits", observed_generation=gen),
    ]
    return InferenceQuotaStatus(observed_generation=gen, used=used, service_count=len(services), refused_count=refused,
                                limited_count=limited, omitted_count=len(services) - len(listed), services=listed,
                                conditions=conditions)
