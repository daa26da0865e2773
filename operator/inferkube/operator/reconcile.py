"""One level-based reconcile: parse -> observe -> render -> adopt -> apply what differs -> prune -> status.

Create, update, resume, child events and the periodic resync all call ``reconcile``; it computes
everything from the current spec and the live children, so running it again is always safe.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils import parse_quantity

from inferkube.api import contract
from inferkube.api.status import InferenceServiceStatus
from inferkube.operator import events, kinds, names
from inferkube.operator.apply import KubeWriter, OwnerRef, PermanentApiError, adopt
from inferkube.operator.inputs import ServiceMeta, SpecError
from inferkube.operator.parse import parse_service
from inferkube.operator.quota import BLOCKED, CLAMPED, REFUSED, ServiceDecision
from inferkube.operator.render import Child, render_children
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.status import (
    APPLY_REJECTED,
    INVALID_SPEC,
    compute_status,
    parse_download_report,
    refused_status,
    status_patch,
)
from inferkube.operator.world import Children, job_state, observe

log = logging.getLogger(__name__)


def _same_quantity(a: Any, b: Any) -> bool:
    """True when a and b are the same Kubernetes quantity written differently ('0.5' vs '500m', '1024Mi' vs '1Gi')."""
    if not (isinstance(a, str) or isinstance(b, str)):
        return False
    try:
        return bool(parse_quantity(a) == parse_quantity(b))
    except (ValueError, TypeError, ArithmeticError):
        return False


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field we set has the same value live (the server may add defaults around it)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_subset, desired, live))
    return bool(desired == live) or _same_quantity(desired, live)


def needs_apply(child: Child, desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether the child must be written: absent, or (unless create-only) drifted from what we want."""
    if live is None:
        return True
    if child.create_only:
        return False
    if contract.ANNOTATION_TENANT_POLICY in (live["metadata"].get("annotations") or {}) and \
            contract.ANNOTATION_TENANT_POLICY not in desired["metadata"].get("annotations", {}):
        return True  # the policy went away: the Deployment must stop saying it was written
    return not (is_subset(desired["metadata"].get("labels", {}), live["metadata"].get("labels", {}))
                and is_subset(desired["metadata"].get("annotations", {}), live["metadata"].get("annotations", {}))
                and is_subset(desired.get("metadata", {}).get("ownerReferences", []),
                              live["metadata"].get("ownerReferences", []))
                and is_subset(desired.get("spec", {}), live.get("spec", {}))
                and desired.get("data", {}) == live.get("data", {}))  # ConfigMaps: exact, keys may go away


HANDOVER_MANAGER = "inferkube-replicas-handover"


def replicas_to_hand_over(desired: dict[str, Any], live: dict[str, Any] | None, floor: int = 0) -> int | None:
    """The live replica count to hand to another field manager before we stop sending replicas.

    Server-side apply removes a field its only owner stops sending: a Deployment switched to an
    autoscaler would drop to the default of 1 replica. Kubernetes' documented way out is to let a
    second manager own the current value first ("transferring ownership"); the HPA then takes it over.
    ``floor``: the autoscaler's minimum; an autoscaler never scales up from 0 (a quota-refused service).
    """
    if live is None or desired.get("kind") != "Deployment" or "replicas" in desired.get("spec", {}):
        return None
    replicas = (live.get("spec") or {}).get("replicas")
    if replicas is None:
        return None
    for entry in live["metadata"].get("managedFields") or []:
        spec_fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if entry.get("manager") == contract.FIELD_MANAGER and entry.get("operation") == "Apply" \
                and "f:replicas" in spec_fields:
            return max(int(replicas), floor)
    return None


def never_below_running(quota: ServiceDecision, spec: Any, deployment: dict[str, Any] | None) -> ServiceDecision:
    """The decision, raised to what the live Deployment runs (capped by the spec): a quota never stops a replica.

    The quota pass counts what runs too; this covers a pass that ran before the Deployment's watch event.
    """
    if deployment is None:
        return quota
    live = (deployment.get("spec") or {}).get("replicas")
    floor = min(spec.max_possible_replicas, 1 if live is None else int(live))
    if floor <= quota.replicas:
        return quota
    reason = quota.reason
    if reason == REFUSED:
        reason = CLAMPED if spec.autoscaling is not None else BLOCKED
    return dataclasses.replace(quota, replicas=floor, reason=reason)


@dataclass(frozen=True)
class Refusal:
    """Why a reconcile stopped short: INVALID_SPEC or APPLY_REJECTED, and the message users see."""

    reason: str
    message: str


@dataclass(frozen=True)
class Problem:
    """Something users must act on, for the one Warning Event: reason, message, what the operator was doing."""

    reason: str
    message: str
    action: str


def problem_of(status: InferenceServiceStatus, refused: Refusal | None) -> Problem | None:
    """The problem a status reports (its Degraded condition), with the action it came from; None when healthy."""
    degraded = next((c for c in status.conditions if c.type == "Degraded" and c.status == "True"), None)
    if degraded is None:
        return None
    if refused is not None:
        action = events.ACTION_APPLY if refused.reason == APPLY_REJECTED else events.ACTION_RECONCILE
    elif status.cache is not None and status.cache.phase == "Failed":
        action = events.ACTION_DOWNLOAD
    else:
        action = events.ACTION_RECONCILE
    return Problem(degraded.reason, degraded.message, action)


@dataclass
class Outcome:
    """What one reconcile did (the scheduler, the tests and the benchmark read it)."""

    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    status_written: bool = False
    requeue_after: float | None = None  # seconds until progress should be read again
    refused: Refusal | None = None      # set when the spec or a child was refused (a status says so)
    problem: Problem | None = None      # what the written status says is wrong (Degraded=True), refusals included


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _download_report(writer: KubeWriter, namespace: str, job_name: str, children: Children) -> dict | None:
    """The downloader's last report: a finished pod's termination message, else the running pod's log tail."""
    pods = [p for p in children.all(kinds.POD.kind) if (p["metadata"].get("labels") or {}).get("job-name") == job_name]
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(pods):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            report = parse_download_report((terminated or {}).get("message"))
            if report:
                return report
        if (pod.get("status") or {}).get("phase") == "Running":
            return parse_download_report(await writer.pod_log_tail(namespace, pod["metadata"]["name"]))
    return None


def _controlled_by(obj: dict[str, Any], owner: OwnerRef) -> bool:
    """True when owner is obj's controller (never touch objects someone else made)."""
    return any(ref.get("uid") == owner.uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def recall_tenant_policy(wanted: list[Child], children: Children, meta: ServiceMeta, owner: OwnerRef) -> None:
    """What the operator knows of the tenant-policy ConfigMap it does not watch: its own writes (in `children`),
    else the digest on the live Deployment. Same digest as wanted: up to date; another one, or none wanted:
    a copy that needs applying or pruning."""
    name = names.tenant_policy_name(meta)
    deployment = children.get(kinds.DEPLOYMENT.kind, meta.name)
    digest = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(contract.ANNOTATION_TENANT_POLICY)
    if children.get(kinds.CONFIG_MAP.kind, name) is not None or digest is None:
        return
    want = next((c.body for c in wanted if c.kind == kinds.CONFIG_MAP.kind and c.name == name), None)
    same = want is not None and want["metadata"]["annotations"].get(contract.ANNOTATION_TENANT_POLICY) == digest
    recalled = adopt(want, owner) if same and want is not None else {
        "apiVersion": kinds.CONFIG_MAP.api_version, "kind": kinds.CONFIG_MAP.kind,
        "metadata": {"name": name, "namespace": meta.namespace, "ownerReferences": [owner.as_dict()],
                     "labels": names.labels(meta, names.COMPONENT_POLICY)}}
    children.put(recalled)


async def _prune(wanted: list[Child], children: Children, owner: OwnerRef, namespace: str, writer: KubeWriter,
                 outcome: Outcome, forget: Callable[[dict[str, Any]], None]) -> None:
    """Delete children of ours that the spec no longer asks for (an unwatched kind is forgotten at once:
    no watch event will say it went)."""
    keep = {(c.kind, c.name) for c in wanted}
    for known in kinds.PRUNABLE:
        for live in children.all(known.kind):
            name = live["metadata"]["name"]
            if (known.kind, name) not in keep and _controlled_by(live, owner):
                await writer.delete(known.kind, namespace, name)
                children.drop(known.kind, name)
                if not known.watched:
                    forget(live)
                outcome.deleted.append(f"{known.kind}/{name}")


async def _apply_children(wanted: list[Child], children: Children, owner: OwnerRef, writer: KubeWriter,
                          remember: Callable[[dict[str, Any]], None], outcome: Outcome, floor: int = 0) -> None:
    """Write every wanted child that is absent or drifted (create-only children: only when absent)."""
    for child in wanted:
        desired = adopt(child.body, owner) if child.owned else child.body
        live = children.get(child.kind, child.name)
        if not needs_apply(child, desired, live):
            continue
        if child.create_only:
            await writer.create_if_absent(desired)
        else:
            handover = replicas_to_hand_over(desired, live, floor)
            if handover is not None:
                meta_only = {"name": desired["metadata"]["name"], "namespace": desired["metadata"]["namespace"]}
                await writer.apply({"apiVersion": desired["apiVersion"], "kind": desired["kind"], "metadata": meta_only,
                                    "spec": {"replicas": handover}}, field_manager=HANDOVER_MANAGER)
            written = await writer.apply(desired)
            remember(written)
            if written.get("metadata"):
                children.put(written)  # status below sees what we just wrote: one status write, not two
        outcome.applied.append(f"{child.kind}/{child.name}")


async def _converge(body: dict[str, Any], children: Children, apis: set[str], settings: OperatorSettings,
                    writer: KubeWriter, remember: Callable[[dict[str, Any]], None],
                    outcome: Outcome, quota: ServiceDecision | None,
                    forget: Callable[[dict[str, Any]], None]) -> InferenceServiceStatus:
    """parse -> observe -> render -> adopt + apply -> prune -> the status the children now show.

    Raises SpecError (the spec cannot work here) and PermanentApiError (a child was rejected).
    """
    spec, meta = parse_service(body)
    observed = observe(spec, meta, children, apis)
    if quota is not None:
        deployment = children.get(kinds.DEPLOYMENT.kind, meta.name)
        observed = dataclasses.replace(observed, quota=never_below_running(quota, spec, deployment))
    owner = OwnerRef(name=meta.name, uid=body["metadata"]["uid"])
    wanted = render_children(spec, meta, settings, observed)
    recall_tenant_policy(wanted, children, meta, owner)
    floor = spec.autoscaling.min_replicas if spec.autoscaling is not None else 0
    await _apply_children(wanted, children, owner, writer, remember, outcome, floor)
    await _prune(wanted, children, owner, meta.namespace, writer, outcome, forget)
    report = None
    if names.uses_cache(spec):
        job_name = names.download_job_name(meta, names.cache_key(spec))
        state = job_state(children.get(kinds.JOB.kind, job_name))
        if state != "Pending":
            report = await _download_report(writer, meta.namespace, job_name, children)
        if state == "Downloading":
            outcome.requeue_after = settings.progress_interval_seconds
    return compute_status(spec, meta, body["metadata"].get("generation"), settings, children, observed, report)


def _refuse(outcome: Outcome, body: dict[str, Any], reason: str, message: str) -> InferenceServiceStatus:
    """Record why the reconcile stopped; the status that says so."""
    outcome.refused = Refusal(reason, message)
    return refused_status(body.get("status"), body["metadata"].get("generation"), reason, message)


async def write_status(body: dict[str, Any], status: InferenceServiceStatus, writer: KubeWriter,
                       remember: Callable[[dict[str, Any]], None] = lambda _: None) -> bool:
    """The one status writer: merge-patch the computed status when it differs from the current one."""
    patch = status_patch(status, body.get("status"), _now())
    if patch is None:
        return False
    metadata = body["metadata"]
    remember(await writer.patch_status(metadata.get("namespace") or "default", metadata["name"], patch))
    return True


async def reconcile(
    body: dict[str, Any],
    children: Children,
    apis: set[str],
    settings: OperatorSettings,
    writer: KubeWriter,
    remember: Callable[[dict[str, Any]], None] = lambda _: None,
    quota: ServiceDecision | None = None,
    forget: Callable[[dict[str, Any]], None] = lambda _: None,
) -> Outcome:
    """Bring one InferenceService's children and status in line with its spec (and what its quotas allow).

    A spec that cannot work here (InvalidSpec) or a child the API server rejects (ApplyRejected) is no
    exception to the caller: it becomes ``outcome.refused`` and a status, written like every other one.
    """
    outcome = Outcome()
    try:
        status = await _converge(body, children, apis, settings, writer, remember, outcome, quota, forget)
    except SpecError as exc:
        status = _refuse(outcome, body, INVALID_SPEC, str(exc))
    except PermanentApiError as exc:
        status = _refuse(outcome, body, APPLY_REJECTED, f"the API server rejected a child: {exc}"[:1000])
    outcome.problem = problem_of(status, outcome.refused)
    outcome.status_written = await write_status(body, status, writer, remember)
    return outcome
