"""Offline render: what the operator would write for a set of objects, its quota decisions included. Pure.

``inferkube render`` reads InferenceServices, InferenceQuotas and Namespaces (their labels feed a quota's
namespaceSelector) from files. This module runs the operator's own decision (``quota.decide``) over them
as on a cluster where nothing runs yet, hands each service its decision in ``Observed.quota`` (the input
the reconcile hands ``render_children``, so a refused service gets 0 replicas and no autoscaler, a clamped
one a smaller maxReplicas, every selected one its tenant-policy ConfigMap) and says in one line per quota
what it decided.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator.inputs import Observed, SpecError
from inferkube.operator.parse import parse_service
from inferkube.operator.quota import (
    ADMITTED,
    REFUSED,
    Decisions,
    Key,
    QuotaFacts,
    ServiceDecision,
    ServiceFacts,
    decide,
    service_facts,
)
from inferkube.operator.render import render_children
from inferkube.operator.settings import OperatorSettings


@dataclass
class OfflineRender:
    """The children of every service in input order, and what the quotas decided (empty without quotas)."""

    children: list[dict[str, Any]] = field(default_factory=list)
    decisions: Decisions = field(default_factory=Decisions)
    summary: list[str] = field(default_factory=list)


def offline_facts(services: Sequence[dict[str, Any]], namespace_labels: Mapping[str, Mapping[str, str]]) -> list[ServiceFacts]:
    """Each service's decision facts with nothing running. Without a creationTimestamp a service comes after
    every one that has one, in input order (the operator sorts an unknown age last, too)."""
    out = []
    for index, body in enumerate(services):
        namespace = body["metadata"]["namespace"]
        # The API server labels every namespace with its own name; a quota may select by that label alone.
        labels = {**namespace_labels.get(namespace, {}), "kubernetes.io/metadata.name": namespace}
        facts = service_facts(body, labels, running=0)
        if facts is None:
            continue  # its spec does not parse: no quota decides it (as in the operator); its render says why
        if not body["metadata"].get("creationTimestamp"):
            facts = dataclasses.replace(facts, created=f"~{index:09d}")  # '~' sorts after every timestamp
        out.append(facts)
    return out


def _count(n: int, what: str) -> str:
    """'1 GPU', '2 GPUs'."""
    return f"{n} {what}{'' if n == 1 else 's'}"


def _amount(facts: ServiceFacts, replicas: int) -> str:
    """'2 replicas, 4 GPUs' ('up to ...' when an autoscaler chooses)."""
    text = ("up to " if facts.autoscaled else "") + _count(replicas, "replica")
    return text + (f", {_count(replicas * facts.gpus_per_replica, 'GPU')}" if facts.gpus_per_replica else "")


def _describe(facts: ServiceFacts, decision: ServiceDecision) -> str:
    """One service's decision in a few words, with the numbers."""
    who = f"{facts.namespace}/{facts.name}"
    if decision.reason == ADMITTED:
        return f"{who} admitted ({_amount(facts, decision.replicas)})"
    if decision.reason == REFUSED:
        return f"{who} refused: {decision.message}"
    return f"{who} {decision.message}"  # "maxReplicas 5 clamped to 3: ...", "scale-up from 2 to 3 replicas ..."


def describe_decisions(decisions: Decisions, facts: Sequence[ServiceFacts], quotas: Sequence[str]) -> list[str]:
    """One line per quota (by name): every service it selects, in decision order, and what it was allowed."""
    by_key: dict[Key, ServiceFacts] = {f.key: f for f in facts}
    lines = []
    for name in sorted(quotas):
        parts = [_describe(by_key[key], d) for key, d in decisions.services.items() if name in d.quotas]
        lines.append(f"InferenceQuota {name}: {', '.join(parts) if parts else 'selects no InferenceService'}")
    return lines


def render_offline(services: Sequence[dict[str, Any]], quotas: Sequence[dict[str, Any]],
                   namespace_labels: Mapping[str, Mapping[str, str]], settings: OperatorSettings,
                   observe: Callable[[InferenceServiceSpec], Observed]) -> OfflineRender:
    """Every service's children as the operator renders them after its quota decision.

    ``services`` carry their namespace; ``quotas`` must parse (ValidationError otherwise); ``observe`` gives the
    cluster the render assumes for a spec (cache, optional APIs); the decision is added to it. With no live
    Deployment the reconcile's ``never_below_running`` changes nothing, so it is not needed here. SpecError
    names the service it is about.
    """
    out = OfflineRender()
    if quotas:
        facts = offline_facts(services, namespace_labels)
        out.decisions = decide(facts, [QuotaFacts.of(q) for q in quotas])
        out.summary = describe_decisions(out.decisions, facts, [q["metadata"]["name"] for q in quotas])
    for body in services:
        name = body["metadata"]["name"]
        try:
            spec, meta = parse_service(body)
            decided = dataclasses.replace(observe(spec), quota=out.decisions.services.get((meta.namespace, meta.name)))
            out.children += [child.body for child in render_children(spec, meta, settings, decided)]
        except SpecError as exc:
            raise SpecError(f"{name}: {exc}") from None
    return out
