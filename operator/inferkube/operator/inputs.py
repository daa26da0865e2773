"""What the builders are given besides the spec: the service's identity and the observed facts.

``parse.py`` produces ``ServiceMeta`` (or raises ``SpecError``), ``world.observe`` produces ``Observed``;
the builders, the status computation and the reconcile read them here, so none of them imports another's
package to get its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferkube.operator.quota import ServiceDecision


class SpecError(ValueError):
    """A spec that passed admission but cannot work on this cluster (e.g. unknown accelerator profile)."""


@dataclass(frozen=True)
class ServiceMeta:
    """The parts of the InferenceService's metadata builders may use (never its labels)."""

    name: str
    namespace: str


@dataclass(frozen=True)
class Observed:
    """Facts about the cluster the desired state depends on, read by the handler before rendering.

    ``serving_cache_key`` is the cache directory replicas may serve from (a finished download); None
    while nothing is cached yet, which holds the Deployment back so N pods never fetch N copies.
    ``quota`` is what the InferenceQuotas selecting the service allow it (None: no quota selects it).
    ``deployment_replicas`` is the live Deployment's ``spec.replicas`` (None: no Deployment yet), which an
    autoscaler changes.
    """

    serving_cache_key: str | None = None
    monitoring_api: bool = True
    keda_api: bool = True
    alerting_api: bool = True
    quota: ServiceDecision | None = None
    deployment_replicas: int | None = None

    @property
    def quota_refused(self) -> bool:
        """True when a quota admits no replicas of the service (0 replicas, no autoscaler)."""
        return self.quota is not None and not self.quota.admitted and self.quota.replicas == 0
