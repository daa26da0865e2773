"""What the builders are given besides the spec: the service's identity and the observed facts.

``parse.py`` produces ``ServiceMeta`` (or raises ``SpecError``), ``world.observe`` produces ``Observed``;
the builders, the status computation and the reconcile read them here, so none of them imports another's
package to get its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """

    serving_cache_key: str | None = None
    monitoring_api: bool = True
    keda_api: bool = True
    alerting_api: bool = True
