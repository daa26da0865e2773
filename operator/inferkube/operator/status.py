"""Status from the children's real state: one function per condition, a phase table, the patch. Pure functions.

Every status the operator writes comes from here: ``compute_status`` for a spec it acts on,
``refused_status`` for one it cannot act on (InvalidSpec) or whose child the API server rejected
(ApplyRejected); ``status_patch`` turns either into the one merge patch ``reconcile`` writes.

To add a condition: write ``def my_condition(facts: Facts) -> Condition | None`` and list it in
``CONDITIONS``; to add a phase, add a row to ``PHASES`` (first match wins). Both read ``Facts``, which
is where a new observation of the children (e.g. container states) belongs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.api.status import CacheStatus, Condition, ConditionStatus, InferenceServiceStatus, Phase
from inferkube.operator import kinds, names
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.pods import PodProblem, download_pods, first_problem, runtime_pods
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.world import Children, condition_of, download_job, job_state, serving_cache_key

QUOTA_EXCEEDED = contract.CONDITION_QUOTA_EXCEEDED
EVENT_PROGRESS = contract.DOWNLOAD_EVENT_PROGRESS
EVENT_DONE = contract.DOWNLOAD_EVENT_DONE
EVENT_FAILED = contract.DOWNLOAD_EVENT_FAILED


def parse_download_report(text: str | None) -> dict[str, Any] | None:
    """The last downloader JSON line (progress, done or failed) in a log tail or termination message."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and report.get(contract.DOWNLOAD_KEY_EVENT) in (EVENT_PROGRESS, EVENT_DONE,
                                                                                   EVENT_FAILED):
            return report
    return None


def _report_counts(out: CacheStatus, report: dict[str, Any]) -> None:
    """Bytes and files from a progress report (done/total) or a done report (one total for both)."""
    out.bytes_done = report.get(contract.DOWNLOAD_KEY_BYTES_DONE, report.get(contract.DOWNLOAD_KEY_BYTES))
    out.bytes_total = report.get(contract.DOWNLOAD_KEY_BYTES_TOTAL, report.get(contract.DOWNLOAD_KEY_BYTES))
    out.files_done = report.get(contract.DOWNLOAD_KEY_FILES_DONE, report.get(contract.DOWNLOAD_KEY_FILES))
    out.files_total = report.get(contract.DOWNLOAD_KEY_FILES_TOTAL, report.get(contract.DOWNLOAD_KEY_FILES))


def cache_status(
    spec: InferenceServiceSpec, meta: ServiceMeta, children: Children, report: dict[str, Any] | None,
    problem: PodProblem | None = None,
) -> CacheStatus:
    """The cache block of status from the download Job, its pods' start problem and the downloader's last report.

    A download pod that cannot start (a missing Secret, a bad image) fails the cache step now: the Job
    would only give up at its deadline, hours later.
    """
    if not names.uses_cache(spec):
        return CacheStatus(phase="NotUsed")
    job = download_job(spec, meta, children)
    state = job_state(job)
    out = CacheStatus(
        phase=state,
        claim_name=names.cache_claim_name(spec, meta),
        retained=spec.cache.reclaim_policy == "Retain",
        key=names.cache_key(spec),
        serving_key=serving_cache_key(spec, meta, children),
    )
    if job is not None:
        jstatus = job.get("status") or {}
        out.started_at = jstatus.get("startTime")
        out.finished_at = jstatus.get("completionTime")
    report = report or {}
    event = report.get(contract.DOWNLOAD_KEY_EVENT)
    if event in (EVENT_PROGRESS, EVENT_DONE):
        _report_counts(out, report)
    if event == EVENT_DONE:
        out.revision = report.get(contract.DOWNLOAD_KEY_REVISION)
    if state == "Failed":
        if event == EVENT_FAILED:  # the downloader's own reason (NotFound, Unauthorized, ...)
            reason = report.get(contract.DOWNLOAD_KEY_REASON, "DownloadFailed")
            message = report.get(contract.DOWNLOAD_KEY_MESSAGE, "")
        else:  # the Job controller's (BackoffLimitExceeded, DeadlineExceeded)
            failed = condition_of(job, "Failed") or {}
            reason, message = failed.get("reason", "DownloadFailed"), failed.get("message", "")
        out.message = f"{reason}: {message}".strip()
    elif state != "Ready" and problem is not None and problem.is_start_failure:
        out.phase, out.message = "Failed", f"{problem.reason}: {problem.message}"
    return out


def _percent(cache: CacheStatus) -> str | None:
    """'42%' of a download in progress, when the total is known."""
    if cache.bytes_total and cache.bytes_done is not None:
        return f"{min(100, int(100 * cache.bytes_done / cache.bytes_total))}%"
    return None


@dataclass(frozen=True)
class Facts:
    """What the children report, read once: the input of every condition and of the phase table."""

    spec: InferenceServiceSpec
    meta: ServiceMeta
    generation: int | None
    children: Children
    observed: Observed
    cache: CacheStatus
    deployment: dict[str, Any] | None
    runtime_problem: PodProblem | None = None   # the runtime pods' first problem (pods.py)
    download_problem: PodProblem | None = None  # the wanted download Job's pods' first problem

    @property
    def deployment_status(self) -> dict[str, Any]:
        """The Deployment's status ({} while there is none)."""
        return (self.deployment or {}).get("status") or {}

    @property
    def replicas(self) -> int:
        """Replicas that exist."""
        return int(self.deployment_status.get("replicas", 0))

    @property
    def ready_replicas(self) -> int:
        """Replicas that pass readiness."""
        return int(self.deployment_status.get("readyReplicas", 0))

    @property
    def desired_replicas(self) -> int:
        """Replicas the Deployment asks for (1 while there is none)."""
        return int((self.deployment or {}).get("spec", {}).get("replicas", 1))

    def deployment_condition(self, ctype: str) -> dict[str, Any] | None:
        """One of the Deployment's own conditions (Available, Progressing, ReplicaFailure)."""
        return condition_of(self.deployment, ctype)

    @property
    def available_replicas(self) -> int:
        """Replicas available for minReadySeconds."""
        return int(self.deployment_status.get("availableReplicas", 0))

    @property
    def rollout(self) -> str | None:
        """What the Deployment's rollout still waits for (e.g. '1/2 updated'); None once it is complete.

        The same test as Argo CD's Deployment health and `kubectl rollout status`: the controller has seen
        the current generation, every replica runs the new template, no old replica is left, and every
        updated replica is available.
        """
        if self.deployment is None:
            return None
        dstatus = self.deployment_status
        updated = int(dstatus.get("updatedReplicas", 0))
        generation = self.deployment["metadata"].get("generation")
        if generation is not None and int(dstatus.get("observedGeneration", 0)) < generation:
            return f"waiting for the Deployment controller to see generation {generation}"
        if updated < self.desired_replicas:
            return f"{updated}/{self.desired_replicas} updated"
        if self.replicas > updated:
            return f"{self.replicas - updated} old replicas terminating"
        if self.available_replicas < updated:
            return f"{self.available_replicas}/{updated} updated replicas available"
        return None

    @property
    def deadline_exceeded(self) -> bool:
        """The rollout ran past progressDeadlineSeconds."""
        return (self.deployment_condition("Progressing") or {}).get("reason") == "ProgressDeadlineExceeded"

    @property
    def serving(self) -> bool:
        """At least one replica is ready and the Deployment says it is available."""
        return (self.deployment is not None and self.ready_replicas > 0
                and (self.deployment_condition("Available") or {}).get("status") == "True")

    def condition(self, ctype: str, ok: bool | None, reason: str, message: str = "") -> Condition:
        """A condition of this generation (ok None: Unknown)."""
        status: ConditionStatus = "Unknown" if ok is None else ("True" if ok else "False")
        return Condition(type=ctype, status=status, reason=reason, message=message,
                         observed_generation=self.generation)


def read_facts(spec: InferenceServiceSpec, meta: ServiceMeta, generation: int | None, children: Children,
               observed: Observed, report: dict[str, Any] | None = None) -> Facts:
    """The facts every condition reads, from the live children, their pods and the downloader's last report."""
    download = None
    if names.uses_cache(spec):
        download = first_problem(download_pods(children, names.download_job_name(meta, names.cache_key(spec))))
    return Facts(spec=spec, meta=meta, generation=generation, children=children, observed=observed,
                 cache=cache_status(spec, meta, children, report, download),
                 deployment=children.get(kinds.DEPLOYMENT.kind, meta.name),
                 runtime_problem=first_problem(runtime_pods(children)), download_problem=download)


# --- One function per condition ----------------------------------------------------------------

def model_cached(f: Facts) -> Condition:
    """ModelCached: the model is on the cache claim (or read from a volume)."""
    cache = f.cache
    if cache.phase == "NotUsed":
        if f.spec.source_scheme == "pvc":
            return f.condition("ModelCached", True, "SourceIsVolume", f"model is read from {f.spec.model.source}")
        return f.condition("ModelCached", False, "CacheDisabled", "every pod downloads the model at start (slow path)")
    if cache.phase == "Ready":
        return f.condition("ModelCached", True, "Downloaded", f"model cached in claim {cache.claim_name}")
    if cache.phase == "Failed":
        if f.download_problem is not None and f.download_problem.is_start_failure:  # the Job is still waiting
            return f.condition("ModelCached", False, f.download_problem.reason, f.download_problem.message)
        return f.condition("ModelCached", False, "DownloadFailed", cache.message or "download Job failed")
    pct = _percent(cache)
    waiting = f"; waiting: {f.download_problem.message}" if f.download_problem is not None else ""  # e.g. no node
    return f.condition("ModelCached", False, "Downloading" if cache.phase == "Downloading" else "DownloadPending",
                       f"downloading {f.spec.model.source}" + (f" ({pct})" if pct else "") + waiting)


def available(f: Facts) -> Condition:
    """Available: the Deployment's own Available condition, with a replica ready (or scaled to zero)."""
    if f.deployment is None:
        return f.condition("Available", False, "NoDeployment", "the Deployment is created once the model is cached")
    theirs = f.deployment_condition("Available")
    ok = (theirs or {}).get("status") == "True" and (f.ready_replicas > 0 or f.desired_replicas == 0)
    counted = f"{f.ready_replicas}/{f.desired_replicas} replicas ready"
    if theirs is None:
        return f.condition("Available", False, "Pending", f"the Deployment controller has not reported yet; {counted}")
    return f.condition("Available", ok, theirs.get("reason") or "Unknown", theirs.get("message") or counted)


def progressing(f: Facts) -> Condition:
    """Progressing: a download or a rollout is under way (not once the rollout deadline passed)."""
    if f.deployment is None:
        return f.condition("Progressing", f.cache.phase in ("Pending", "Downloading"), "CachingModel",
                           "waiting for the model cache")
    theirs = f.deployment_condition("Progressing") or {}
    if f.deadline_exceeded:
        return f.condition("Progressing", False, "ProgressDeadlineExceeded", theirs.get("message") or
                           "the rollout ran past progressDeadlineSeconds")
    if f.rollout is not None:
        return f.condition("Progressing", True, "RollingOut", f.rollout)
    return f.condition("Progressing", False, "RolloutComplete", f"{f.replicas}/{f.desired_replicas} replicas updated")


def degraded(f: Facts) -> Condition:
    """Degraded: something the user must look at, named (failed download, a pod that cannot run, quota,
    stuck rollout)."""
    if f.cache.phase == "Failed":
        if f.download_problem is not None and f.download_problem.is_start_failure:
            return f.condition("Degraded", True, f.download_problem.reason, f.download_problem.message)
        return f.condition("Degraded", True, "DownloadFailed", f.cache.message or "download Job failed")
    problem = f.runtime_problem
    if problem is not None and problem.blocking:
        return f.condition("Degraded", True, problem.reason, problem.message)
    replica_failure = f.deployment_condition("ReplicaFailure")
    if replica_failure is not None and replica_failure.get("status") == "True":
        return f.condition("Degraded", True, "ReplicaFailure", replica_failure.get("message") or
                           replica_failure.get("reason") or "the ReplicaSet cannot create pods")
    if f.deadline_exceeded:
        return f.condition("Degraded", True, "ProgressDeadlineExceeded",
                           (f.deployment_condition("Progressing") or {}).get("message") or
                           "the rollout ran past progressDeadlineSeconds")
    # An unschedulable pod is not Degraded (a node may still come, e.g. from a cluster autoscaler; Argo CD's
    # own checks call a Pending pod Progressing): Ready and the Scheduling phase name it, and the Deployment's
    # progress deadline turns it into ProgressDeadlineExceeded above.
    return f.condition("Degraded", False, "AsExpected", "no problem observed")


def monitoring_ready(f: Facts) -> Condition:
    """MonitoringReady: the ServiceMonitor exists (or why there is none)."""
    if not f.spec.monitoring.service_monitor:
        return f.condition("MonitoringReady", False, "Disabled", "spec.monitoring.serviceMonitor is false")
    if not f.observed.monitoring_api:
        return f.condition("MonitoringReady", False, "PrometheusOperatorMissing",
                           "monitoring.coreos.com/v1 ServiceMonitor is not served; /metrics is still exposed")
    exists = f.children.get(kinds.SERVICE_MONITOR.kind, f.meta.name) is not None
    return f.condition("MonitoringReady", exists, "ServiceMonitorCreated" if exists else "Creating",
                       f"ServiceMonitor {f.meta.name} " + ("exists" if exists else "is being created"))


def autoscaler_ready(f: Facts) -> Condition | None:
    """AutoscalerReady: the HPA or ScaledObject exists (None without autoscaling)."""
    if f.spec.autoscaling is None:
        return None
    hpa = f.spec.autoscaling.engine == "hpa"
    kind = (kinds.HORIZONTAL_POD_AUTOSCALER if hpa else kinds.SCALED_OBJECT).kind
    if f.observed.quota_refused:
        return f.condition("AutoscalerReady", False, QUOTA_EXCEEDED, "no autoscaler while the quotas admit no replicas")
    if not hpa and not f.observed.keda_api:
        return f.condition("AutoscalerReady", False, "KedaMissing", "keda.sh/v1alpha1 ScaledObject is not served")
    exists = f.children.get(kind, f.meta.name) is not None
    return f.condition("AutoscalerReady", exists, f"{kind}Created" if exists else "Pending",
                       f"{kind} {f.meta.name} " + ("exists" if exists else "is being created"))


def quota_exceeded(f: Facts) -> Condition | None:
    """QuotaExceeded: an InferenceQuota holds the service below its spec (None when no quota selects it)."""
    quota = f.observed.quota
    if quota is None:
        return None
    if not quota.limited:
        return f.condition(QUOTA_EXCEEDED, False, "WithinQuota", f"admitted by InferenceQuota {', '.join(quota.quotas)}")
    return f.condition(QUOTA_EXCEEDED, True, quota.reason, quota.message)


# Every condition but Ready, in the order status lists them (Ready, derived from the phase, goes first).
CONDITIONS: tuple[Callable[[Facts], Condition | None], ...] = (
    model_cached, available, progressing, degraded, monitoring_ready, autoscaler_ready, quota_exceeded,
)


# --- The phase table -----------------------------------------------------------------------------

def _pods_phase(f: Facts, _degraded: Condition) -> tuple[Phase, str]:
    """(phase, detail) from runtime pods that are not ready yet: Scheduling or LoadingModel."""
    pods = runtime_pods(f.children)
    for pod in pods:
        scheduled = condition_of(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            return "Scheduling", scheduled.get("message") or scheduled.get("reason") or "waiting for a node"
    if pods:
        return "LoadingModel", "runtime is loading the model"
    return "Scheduling", "waiting for pods"


@dataclass(frozen=True)
class PhaseRule:
    """One row of the phase table: when ``applies``, the phase and its detail are ``then``."""

    name: str
    applies: Callable[[Facts, Condition], bool]  # (facts, the Degraded condition)
    then: Callable[[Facts, Condition], tuple[Phase, str]]


def _serving_phase(f: Facts, degraded: Condition) -> tuple[Phase, str]:
    """Ready, or Degraded when serving with a problem."""
    phase: Phase = "Degraded" if degraded.status == "True" else "Ready"
    return phase, f"{f.ready_replicas}/{f.replicas} replicas ready"


# First match wins.
PHASES: tuple[PhaseRule, ...] = (
    PhaseRule("download failed", lambda f, d: f.cache.phase == "Failed" and not f.serving,
              lambda f, d: ("Failed", f.cache.message or "download failed")),
    PhaseRule("degraded and not serving", lambda f, d: d.status == "True" and not f.serving,
              lambda f, d: ("Failed", f"{d.reason}: {d.message}")),
    PhaseRule("refused by a quota", lambda f, d: f.observed.quota_refused and not f.serving,
              lambda f, d: ("Pending", f"{QUOTA_EXCEEDED}: {f.observed.quota.message if f.observed.quota else ''}")),
    PhaseRule("downloading", lambda f, d: f.cache.phase in ("Pending", "Downloading") and f.deployment is None,
              lambda f, d: ("CachingModel", _percent(f.cache) or f.cache.phase.lower())),
    PhaseRule("no deployment yet", lambda f, d: f.deployment is None,
              lambda f, d: ("Pending", "creating children")),
    PhaseRule("rolling out", lambda f, d: f.serving and d.status != "True" and f.rollout is not None,
              lambda f, d: ("RollingOut", f.rollout or "")),
    PhaseRule("serving", lambda f, d: f.serving, _serving_phase),
    PhaseRule("scaled to zero", lambda f, d: f.desired_replicas == 0,
              lambda f, d: ("Ready", "scaled to zero")),
    PhaseRule("pods not ready", lambda f, d: True, _pods_phase),
)


def phase_of(f: Facts, degraded: Condition) -> tuple[Phase, str]:
    """(phase, detail): the first row of PHASES that applies."""
    return next(rule.then(f, degraded) for rule in PHASES if rule.applies(f, degraded))


def ready(f: Facts, degraded: Condition, phase: Phase, detail: str) -> Condition:
    """Ready: serving (or scaled to zero); otherwise the degraded reason, a quota or the phase says why not."""
    if f.observed.quota_refused and not f.serving:
        return f.condition("Ready", False, QUOTA_EXCEEDED, f.observed.quota.message if f.observed.quota else "")
    if f.serving or (f.deployment is not None and f.desired_replicas == 0):
        return f.condition("Ready", True, "Ready", f"{f.ready_replicas}/{f.replicas} replicas ready; "
                                                   f"serving {names.served_model_name(f.spec, f.meta)}")
    if degraded.status == "True":
        return f.condition("Ready", False, degraded.reason, detail)
    if f.runtime_problem is not None:  # waiting for a node: named, not Degraded
        return f.condition("Ready", False, f.runtime_problem.reason, f.runtime_problem.message)
    return f.condition("Ready", False, phase, detail)


def compute_status(
    spec: InferenceServiceSpec,
    meta: ServiceMeta,
    generation: int | None,
    settings: OperatorSettings,
    children: Children,
    observed: Observed,
    report: dict[str, Any] | None = None,
) -> InferenceServiceStatus:
    """Conditions, phase and numbers, computed only from what the children report."""
    f = read_facts(spec, meta, generation, children, observed, report)
    conditions = [c for c in (rule(f) for rule in CONDITIONS) if c is not None]
    degraded_now = next(c for c in conditions if c.type == "Degraded")
    phase, detail = phase_of(f, degraded_now)
    return InferenceServiceStatus(
        observed_generation=generation,
        phase=phase,
        phase_detail=detail,
        conditions=[ready(f, degraded_now, phase, detail), *conditions],
        replicas=f.replicas,
        ready_replicas=f.ready_replicas,
        replicas_summary=f"{f.ready_replicas}/{f.desired_replicas if f.deployment is not None else spec.starting_replicas}",
        selector=names.selector_string(meta),
        url=names.service_url(meta, settings),
        served_model_name=names.served_model_name(spec, meta),
        cache=f.cache,
    )


# --- Refused: a spec the operator cannot act on, a child the API server rejected -----------------

INVALID_SPEC = "InvalidSpec"        # SpecError: admitted, but unusable here (e.g. unknown accelerator profile)
APPLY_REJECTED = "ApplyRejected"    # the API server rejected a child for good (4xx on a write)


def _written(current: dict[str, Any] | None) -> dict[str, Any]:
    """The status as we wrote it (kopf's own bookkeeping key left out)."""
    return {k: v for k, v in (current or {}).items() if k != "kopf"}


def refused_status(current: dict[str, Any] | None, generation: int | None, reason: str,
                   message: str) -> InferenceServiceStatus:
    """Ready=False and Degraded=True with reason (INVALID_SPEC, APPLY_REJECTED), phase Failed.

    Nothing could be observed or built, so everything else stays as last written (a status that does not
    parse is dropped).
    """
    try:
        previous = InferenceServiceStatus.model_validate(_written(current))
    except ValidationError:
        previous = InferenceServiceStatus()
    says: tuple[tuple[str, ConditionStatus], ...] = (("Ready", "False"), ("Degraded", "True"))
    refused = [Condition(type=ctype, status=status, reason=reason, message=message, observed_generation=generation)
               for ctype, status in says]
    kept = [c for c in previous.conditions if c.type not in ("Ready", "Degraded")]
    return previous.model_copy(update={"observed_generation": generation, "phase": "Failed", "phase_detail": reason,
                                       "conditions": [*refused, *kept]})


# --- The patch -----------------------------------------------------------------------------------

def _merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning old into new: keys new no longer has become null, at every depth."""
    patch = dict(new)
    for key, value in old.items():
        if key not in new:
            patch[key] = None
        elif isinstance(value, dict) and isinstance(new[key], dict):
            patch[key] = _merge_patch(value, new[key])
    return patch


def status_patch(new: InferenceServiceStatus, current: dict[str, Any] | None, now: str) -> dict[str, Any] | None:
    """The merge patch to write, or None when nothing changed.

    lastTransitionTime is kept from the current status for conditions whose status did not change,
    so an unchanged world produces an identical status and no write.
    """
    current = _written(current)
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    body = new.model_dump(by_alias=True, exclude_none=True)
    for c in body["conditions"]:
        old = previous.get(c["type"])
        c["lastTransitionTime"] = old.get("lastTransitionTime", now) if old and old.get("status") == c["status"] else now
    if current == body:
        return None
    return _merge_patch(current, body)
