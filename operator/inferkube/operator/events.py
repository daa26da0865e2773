"""Kubernetes Events the operator posts: who reports them and what it was doing (pure, but for the pod name).

kopf 1.45's own poster sets the reporting component and instance from its settings but always writes
``action: "Action?"``, so the operator posts its Events itself (``KubeWriter.post_event``, the one write
path) with a builder from here, and kopf's posting is switched off.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

REPORTING_COMPONENT = "inferkube-operator"
POD_NAME_ENV = "POD_NAME"  # set by the downward API in manifests/operator/deployment.yaml

# What the operator was doing when it noticed (the Event's action).
ACTION_RECONCILE = "Reconcile"      # the spec cannot work here, or the service's pods cannot run
ACTION_APPLY = "Apply"              # the API server rejected a child
ACTION_DOWNLOAD = "Download"        # the model download cannot start or failed
ACTION_LOAD_SETTINGS = "LoadSettings"  # the settings ConfigMap is invalid
ACTION_ADMIT = "Admit"                # an InferenceQuota admits no replicas of the service
MAX_MESSAGE = 1024  # the API server's limit on an Event's note


def reporting_instance() -> str:
    """This operator's pod name (downward API), else the host name (which is the pod name in a pod)."""
    return os.environ.get(POD_NAME_ENV) or socket.gethostname()


def _reference(obj: dict[str, Any]) -> dict[str, Any]:
    """The involvedObject of an Event about obj."""
    meta = obj["metadata"]
    ref = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta["name"],
           "namespace": meta.get("namespace"), "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}
    return {k: v for k, v in ref.items() if v}


def event_body(involved: dict[str, Any], event_type: str, reason: str, message: str, action: str,
               instance: str, now: datetime.datetime) -> dict[str, Any]:
    """A core/v1 Event about involved (what `kubectl describe` lists), named like client-go names its Events."""
    namespace = involved["metadata"].get("namespace") or "default"
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{involved['metadata']['name']}.{int(now.timestamp() * 1e9):x}", "namespace": namespace},
        "involvedObject": _reference(involved),
        "type": event_type,
        "reason": reason,
        "message": message,
        "action": action,
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": instance,
        "source": {"component": REPORTING_COMPONENT},  # the "From" column of `kubectl describe`
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
