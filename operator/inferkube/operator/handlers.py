"""kopf registrations: thin handlers that keep a view of the world and schedule reconciles.

Design (see docs/operator.md): every watched object (InferenceServices, their children, their pods,
the optional CRDs) updates an in-memory ``World``; any change schedules a coalesced, level-based
reconcile of the InferenceService it belongs to. Drift (a deleted child, an edited field) is seen
through the watch within milliseconds, and a periodic resync catches anything missed. Steady state
reads nothing and writes nothing: desired children are compared with the watched copies. The
operator's own settings ConfigMap is watched too: an edit takes effect without a restart.

kopf's change handlers (on.create/update) are not used on purpose: they persist progress annotations
on the user's object (extra writes on an object Argo CD owns) and do not react to child drift.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import kopf
import kubernetes

from inferkube.api import contract
from inferkube.operator import kinds
from inferkube.operator.apply import KubeWriter
from inferkube.operator.scheduler import Reconciler
from inferkube.operator.settings import load_settings, settings_configmap
from inferkube.operator.world import World

log = logging.getLogger("inferkube.operator")
MANAGED = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY}
_CM = kinds.CONFIG_MAP


def _api_client() -> kubernetes.client.ApiClient:
    """The official client, configured in-cluster or from the kubeconfig (development)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # KUBECONFIG is read explicitly: the client only reads it once, at import time.
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=config)
        return kubernetes.client.ApiClient(config)
    return kubernetes.client.ApiClient()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else the kubeconfig named by $KUBECONFIG (read now, not at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Load the operator settings (the mounted file), tune kopf, start the resync loop."""
    config = os.environ.get("INFERKUBE_OPERATOR_CONFIG")
    ours = load_settings(Path(config) if config else None)
    settings.peering.standalone = True          # one replica with the Recreate strategy (docs/operator.md)
    settings.posting.enabled = False             # our Events name the operator and the action (events.py)
    # The settings ConfigMap is the only ConfigMap watched: filtered by the API server, not here.
    namespace, name = settings_configmap()
    only = f"metadata.name={name}" + (f",metadata.namespace={namespace}" if namespace else "")
    settings.watching.field_selectors[_CM.group, _CM.version, _CM.plural] = only
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    settings.queueing.error_delays = [1, 2, 5, 10, 30]
    memo.world = World()
    memo.reconciler = Reconciler(memo.world, ours, KubeWriter(_api_client()))
    memo.reconciler.hold_until_settled(ours.startup_settle_seconds)
    memo.resync = asyncio.create_task(memo.reconciler.resync_forever())


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync loop and in-flight reconciles."""
    memo.resync.cancel()
    await memo.reconciler.close()


@kopf.on.event(kinds.INFERENCE_SERVICE.group, kinds.INFERENCE_SERVICE.version, kinds.INFERENCE_SERVICE.plural)
async def inference_service_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An InferenceService appeared, changed or went away (its quotas may decide differently now)."""
    meta = body.get("metadata") or {}
    old = memo.world.services.get((meta.get("namespace", "default"), meta.get("name")))
    key = memo.world.observe_service(event.get("type"), dict(body))
    memo.reconciler.quotas.service_event(old, None if event.get("type") == "DELETED" else dict(body))
    if key is not None:
        memo.reconciler.schedule(key)


def _child_handler(group: str, version: str, plural: str) -> None:
    """Register one watch on managed children of a kind."""

    @kopf.on.event(group, version, plural, labels=MANAGED, id=f"child-{plural}")
    async def child_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        old = memo.world.known_child(dict(body)) if plural == kinds.DEPLOYMENT.plural else None
        key = memo.world.observe_child(event.get("type"), dict(body))
        if plural == kinds.DEPLOYMENT.plural:  # the replicas a service runs feed quota decisions
            memo.reconciler.quotas.deployment_event(old, None if event.get("type") == "DELETED" else dict(body))
        if key is not None:
            memo.reconciler.schedule(key)


for _kind in kinds.WATCHED:
    _child_handler(_kind.group, _kind.version, _kind.plural)


_QUOTA, _NAMESPACE, _CRD = kinds.INFERENCE_QUOTA, kinds.NAMESPACE, kinds.CUSTOM_RESOURCE_DEFINITION


@kopf.on.event(_QUOTA.group, _QUOTA.version, _QUOTA.plural)
async def quota_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An InferenceQuota appeared, changed or went away: recompute decisions (its own status writes do not)."""
    if memo.reconciler.quotas.book.observe_quota(event.get("type"), dict(body)):
        memo.reconciler.quotas.request_pass()
    elif event.get("type") != "DELETED":
        memo.reconciler.quotas.write_statuses()  # someone else changed its status: put it back if it differs


@kopf.on.event(_NAMESPACE.group, _NAMESPACE.version, _NAMESPACE.plural)
async def namespace_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A Namespace's labels feed quotas' namespaceSelector."""
    if memo.reconciler.quotas.book.observe_namespace(event.get("type"), dict(body)):
        memo.reconciler.quotas.request_pass()


@kopf.on.event(_CRD.group, _CRD.version, _CRD.plural, when=lambda name, **_: name in kinds.OPTIONAL_APIS)
async def optional_api_event(event: kopf.RawEvent, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The Prometheus Operator or KEDA CRD appeared or went away: reconcile everything."""
    if memo.world.observe_crd(event.get("type"), name, dict(body)):
        memo.reconciler.schedule_all()


def _is_settings(name: str, namespace: str | None, **_: Any) -> bool:
    """The operator's own settings ConfigMap (the API server already filters; this guards a wider watch)."""
    want_namespace, want_name = settings_configmap()
    return name == want_name and (want_namespace is None or namespace == want_namespace)


@kopf.on.event(_CM.group, _CM.version, _CM.plural, when=_is_settings)
async def settings_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The settings ConfigMap changed: new settings apply without a restart (docs/operator.md)."""
    await memo.reconciler.settings_changed(event.get("type"), dict(body))
