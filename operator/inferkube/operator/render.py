"""Render: every child an InferenceService should have now, in apply order, from the pure builders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import names
from inferkube.operator.builders import common
from inferkube.operator.builders.cache_job import build_cache_job
from inferkube.operator.builders.deployment import build_deployment
from inferkube.operator.builders.hpa import build_hpa
from inferkube.operator.builders.keda import build_scaledobject
from inferkube.operator.builders.pdb import build_pdb
from inferkube.operator.builders.prometheusrule import build_prometheusrule
from inferkube.operator.builders.pvc import build_pvc
from inferkube.operator.builders.service import build_service
from inferkube.operator.builders.servicemonitor import build_servicemonitor
from inferkube.operator.builders.tenant_policy import build_tenant_policy, service_policy
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings


@dataclass(frozen=True)
class Child:
    """One desired child and how it is applied.

    owned: carries the InferenceService's controller ownerReference (garbage-collected with it).
    create_only: created when absent, never updated (a Job's pod template is immutable).
    """

    body: dict[str, Any]
    owned: bool = True
    create_only: bool = False

    @property
    def kind(self) -> str:
        """The child's kind."""
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        """The child's name."""
        return str(self.body["metadata"]["name"])


def render_children(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> list[Child]:
    """Every child the InferenceService should have now, in apply order.

    The Deployment (and its autoscaler) is held back until a cache directory is ready, so N pods never
    download N copies; the ServiceMonitor and ScaledObject only appear where their APIs are served.
    """
    common.accelerator_profile(spec, settings)  # unknown profile -> SpecError before anything is built
    args = (spec, meta, settings, observed)
    children: list[Child] = []
    if names.uses_cache(spec):
        # A claim's spec is immutable (but for expansion): created once, never re-applied.
        children.append(Child(build_pvc(*args), owned=spec.cache.reclaim_policy == "Delete", create_only=True))
        children.append(Child(build_cache_job(*args), create_only=True))
    children.append(Child(build_service(*args)))
    children.append(Child(build_pdb(*args)))
    policy = service_policy(spec, observed)
    if policy is not None:
        children.append(Child(build_tenant_policy(meta, policy)))
    serving = not names.uses_cache(spec) or observed.serving_cache_key is not None
    if serving:
        children.append(Child(build_deployment(*args)))
        if spec.autoscaling is not None and not observed.quota_refused:  # refused: 0 replicas, no autoscaler
            if spec.autoscaling.engine == "hpa":
                children.append(Child(build_hpa(*args)))
            elif observed.keda_api:
                children.append(Child(build_scaledobject(*args)))
    if spec.monitoring.service_monitor and observed.monitoring_api:
        children.append(Child(build_servicemonitor(*args)))
        if spec.monitoring.alert_rules and observed.alerting_api:
            children.append(Child(build_prometheusrule(*args)))
    return children

