"""Status from the children's real state: conditions, phase, replicas, cache progress. Pure functions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.api.status import CacheStatus, Condition, ConditionStatus, InferenceServiceStatus
from inferkube.operator.builders import common
from inferkube.operator.builders.common import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings

EVENT_PROGRESS = contract.DOWNLOAD_EVENT_PROGRESS
EVENT_DONE = contract.DOWNLOAD_EVENT_DONE
EVENT_FAILED = contract.DOWNLOAD_EVENT_FAILED


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


def _condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """A condition of a child's status by type."""
    if obj is None:
        return None
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None)


def job_state(job: dict[str, Any] | None) -> str:
    """Pending, Downloading, Ready or Failed for a download Job."""
    if job is None:
        return "Pending"
    status = job.get("status") or {}
    if (_condition(job, "Complete") or {}).get("status") == "True" or status.get("succeeded", 0) > 0:
        return "Ready"
    if (_condition(job, "Failed") or {}).get("status") == "True":
        return "Failed"
    return "Downloading" if status.get("active", 0) > 0 else "Pending"


def serving_cache_key(spec: InferenceServiceSpec, meta: ServiceMeta, children: Children) -> str | None:
    """The cache directory replicas may serve from: the wanted one once downloaded, else the one in use."""
    if not common.uses_cache(spec):
        return None
    wanted = common.cache_key(spec)
    if job_state(children.get("Job", common.download_job_name(meta, wanted))) == "Ready":
        return wanted
    deployment = children.get("Deployment", meta.name)
    if deployment is not None:
        return (deployment["metadata"].get("annotations") or {}).get(contract.ANNOTATION_CACHE_KEY)
    return None


def observe(spec: InferenceServiceSpec, meta: ServiceMeta, children: Children, apis: set[str]) -> Observed:
    """The facts builders need, from live children and the set of served optional APIs."""
    return Observed(
        serving_cache_key=serving_cache_key(spec, meta, children),
        monitoring_api="ServiceMonitor" in apis,
        keda_api="ScaledObject" in apis,
        alerting_api="PrometheusRule" in apis,
    )


def parse_download_report(text: str | None) -> dict[str, Any] | None:
    """The last downloader JSON line (progress, done or failed) in a log tail or termination message."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and report.get("event") in (EVENT_PROGRESS, EVENT_DONE, EVENT_FAILED):
            return report
    return None


def cache_status(
    spec: InferenceServiceSpec, meta: ServiceMeta, children: Children, report: dict[str, Any] | None
) -> CacheStatus:
    """The cache block of status from the download Job and the downloader's last report."""
    if not common.uses_cache(spec):
        return CacheStatus(phase="NotUsed")
    key = common.cache_key(spec)
    job = children.get("Job", common.download_job_name(meta, key))
    state = job_state(job)
    out = CacheStatus(
        phase=state,  # type: ignore[arg-type]  # job_state returns one of the CacheStatus phases as a plain str
        claim_name=common.cache_claim_name(spec, meta),
        retained=spec.cache.reclaim_policy == "Retain",
        key=key,
        serving_key=serving_cache_key(spec, meta, children),
    )
    if job is not None:
        jstatus = job.get("status") or {}
        out.started_at = jstatus.get("startTime")
        out.finished_at = jstatus.get("completionTime")
    report = report or {}
    if report.get("event") in (EVENT_PROGRESS, EVENT_DONE):
        out.bytes_done = report.get("bytesDone", report.get("bytes"))
        out.bytes_total = report.get("bytesTotal", report.get("bytes"))
        out.files_done = report.get("filesDone", report.get("files"))
        out.files_total = report.get("filesTotal", report.get("files"))
    if report.get("event") == EVENT_DONE:
        out.revision = report.get("revision")
    if state == "Failed":
        failed = _condition(job, "Failed") or {}
        if report.get("event") == EVENT_FAILED:
            out.message = f"{report.get('reason', 'DownloadFailed')}: {report.get('message', '')}".strip()
        else:
            out.message = f"{failed.get('reason', 'DownloadFailed')}: {failed.get('message', '')}".strip()
    return out


def _percent(cache: CacheStatus) -> str | None:
    """'42%' of a download in progress, when the total is known."""
    if cache.bytes_total and cache.bytes_done is not None:
        return f"{min(100, int(100 * cache.bytes_done / cache.bytes_total))}%"
    return None


def _pods_phase(pods: list[dict[str, Any]]) -> tuple[str, str]:
    """(phase, detail) from runtime pods that are not ready yet: Scheduling or LoadingModel."""
    for pod in pods:
        scheduled = _condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            return "Scheduling", scheduled.get("message") or scheduled.get("reason") or "waiting for a node"
    if pods:
        return "LoadingModel", "runtime is loading the model"
    return "Scheduling", "waiting for pods"


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
    cache = cache_status(spec, meta, children, report)
    deployment = children.get("Deployment", meta.name)
    dstatus = (deployment or {}).get("status") or {}
    replicas = int(dstatus.get("replicas", 0))
    ready = int(dstatus.get("readyReplicas", 0))
    desired = (deployment or {}).get("spec", {}).get("replicas", 1)
    available = _condition(deployment, "Available")
    progressing = _condition(deployment, "Progressing")
    replica_failure = _condition(deployment, "ReplicaFailure")
    deadline = progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded"
    conditions: list[Condition] = []

    def cond(ctype: str, ok: bool | None, reason: str, message: str = "") -> None:
        status: ConditionStatus = "Unknown" if ok is None else ("True" if ok else "False")
        conditions.append(Condition(type=ctype, status=status, reason=reason, message=message,
                                    observed_generation=generation))

    # ModelCached
    if cache.phase == "NotUsed":
        if spec.source_scheme == "pvc":
            cond("ModelCached", True, "SourceIsVolume", f"model is read from {spec.model.source}")
        else:
            cond("ModelCached", False, "CacheDisabled", "every pod downloads the model at start (slow path)")
    elif cache.phase == "Ready":
        cond("ModelCached", True, "Downloaded", f"model cached in claim {cache.claim_name}")
    elif cache.phase == "Failed":
        cond("ModelCached", False, "DownloadFailed", cache.message or "download Job failed")
    else:
        pct = _percent(cache)
        cond("ModelCached", False, "Downloading" if cache.phase == "Downloading" else "DownloadPending",
             f"downloading {spec.model.source}" + (f" ({pct})" if pct else ""))

    # Available / Progressing from the Deployment's own conditions
    if deployment is None:
        cond("Available", False, "NoDeployment", "the Deployment is created once the model is cached")
        cond("Progressing", cache.phase in ("Pending", "Downloading"), "CachingModel", "waiting for the model cache")
    else:
        avail_ok = (available or {}).get("status") == "True" and (ready > 0 or desired == 0)
        cond("Available", avail_ok, (available or {}).get("reason", "Unknown") if available else "Pending",
             (available or {}).get("message", ""))
        rollout_done = (dstatus.get("updatedReplicas", 0) == replicas == ready and
                        dstatus.get("observedGeneration") == deployment["metadata"].get("generation"))
        cond("Progressing", not rollout_done and not deadline,
             (progressing or {}).get("reason", "Pending"), (progressing or {}).get("message", ""))

    # Degraded
    if cache.phase == "Failed":
        cond("Degraded", True, "DownloadFailed", cache.message or "")
    elif replica_failure is not None and replica_failure.get("status") == "True":
        cond("Degraded", True, "ReplicaFailure", replica_failure.get("message", ""))
    elif deadline:
        cond("Degraded", True, "ProgressDeadlineExceeded", (progressing or {}).get("message", ""))
    else:
        cond("Degraded", False, "AsExpected")

    # MonitoringReady
    if not spec.monitoring.service_monitor:
        cond("MonitoringReady", False, "Disabled", "spec.monitoring.serviceMonitor is false")
    elif not observed.monitoring_api:
        cond("MonitoringReady", False, "PrometheusOperatorMissing",
             "monitoring.coreos.com/v1 ServiceMonitor is not served; /metrics is still exposed")
    else:
        exists = children.get("ServiceMonitor", meta.name) is not None
        cond("MonitoringReady", exists, "ServiceMonitorCreated" if exists else "Creating")

    if spec.autoscaling is not None:
        kind = "HorizontalPodAutoscaler" if spec.autoscaling.engine == "hpa" else "ScaledObject"
        if kind == "ScaledObject" and not observed.keda_api:
            cond("AutoscalerReady", False, "KedaMissing", "keda.sh/v1alpha1 ScaledObject is not served")
        else:
            exists = children.get(kind, meta.name) is not None
            cond("AutoscalerReady", exists, f"{kind}Created" if exists else "Pending")

    # Ready and phase
    degraded = next(c for c in conditions if c.type == "Degraded")
    is_ready = deployment is not None and ready > 0 and (available or {}).get("status") == "True"
    if cache.phase == "Failed":
        phase, detail = "Failed", cache.message or "download failed"
    elif degraded.status == "True" and not is_ready:
        phase, detail = "Failed", f"{degraded.reason}: {degraded.message}"
    elif cache.phase in ("Pending", "Downloading") and deployment is None:
        phase, detail = "CachingModel", _percent(cache) or cache.phase.lower()
    elif deployment is None:
        phase, detail = "Pending", "creating children"
    elif is_ready:
        phase = "Degraded" if degraded.status == "True" else "Ready"
        detail = f"{ready}/{replicas} replicas ready"
    elif desired == 0:
        phase, detail = "Ready", "scaled to zero"
    else:
        phase, detail = _pods_phase(children.all("Pod"))
    ready_cond: tuple[ConditionStatus, str, str]
    if is_ready or (deployment is not None and desired == 0):
        ready_cond = ("True", "Ready", f"{ready}/{replicas} replicas ready; serving {common.served_model_name(spec, meta)}")
    else:
        ready_cond = ("False", degraded.reason if degraded.status == "True" else phase, detail)
    conditions.insert(0, Condition(type="Ready", status=ready_cond[0], reason=ready_cond[1], message=ready_cond[2],
                                   observed_generation=generation))
    return InferenceServiceStatus(
        observed_generation=generation,
        phase=phase,  # type: ignore[arg-type]  # every branch above assigns a Phase literal; mypy widens it to str
        phase_detail=detail,
        conditions=conditions,
        replicas=replicas,
        ready_replicas=ready,
        selector=common.selector_string(meta),
        url=common.service_url(meta, settings),
        served_model_name=common.served_model_name(spec, meta),
        cache=cache,
    )


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
    current = {k: v for k, v in (current or {}).items() if k != "kopf"}
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    body = new.model_dump(by_alias=True, exclude_none=True)
    for c in body["conditions"]:
        old = previous.get(c["type"])
        c["lastTransitionTime"] = old.get("lastTransitionTime", now) if old and old.get("status") == c["status"] else now
    if current == body:
        return None
    return _merge_patch(current, body)
