"""Every kind the operator knows, in one table: where it lives in the API and what the operator does with it.

The apply path (REST paths), the watches (``handlers.py``), pruning (``reconcile.py``), the optional
APIs (``world.py``) and the builders' ``apiVersion`` all read this table; RBAC in
``manifests/operator`` is checked against it by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferkube.api import contract


@dataclass(frozen=True)
class Kind:
    """One kind: group/version/plural, and the operator's relation to it.

    watched: the operator watches its managed objects of this kind (children and their pods).
    prunable: a spec change can make a child of this kind unwanted, and the operator deletes it.
    crd: for an optional API, the CustomResourceDefinition whose presence means it is served.
    """

    kind: str
    group: str
    version: str
    plural: str
    watched: bool = True
    prunable: bool = False
    crd: str | None = None

    @property
    def api_version(self) -> str:
        """The apiVersion field of an object of this kind ('v1' for the core group)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path_prefix(self) -> str:
        """The REST path prefix of the kind's group and version."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


DEPLOYMENT = Kind("Deployment", "apps", "v1", "deployments")
SERVICE = Kind("Service", "", "v1", "services")
PERSISTENT_VOLUME_CLAIM = Kind("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims")
POD_DISRUPTION_BUDGET = Kind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets")
# Prunable, in the order they are deleted: autoscaling off or switched, monitoring or alerts off, a
# finished download of an older revision. Deployments, Services, PDBs and claims always stay while the
# InferenceService exists (claims hold data; garbage collection removes the rest on deletion).
HORIZONTAL_POD_AUTOSCALER = Kind("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers",
                                 prunable=True)
SCALED_OBJECT = Kind("ScaledObject", "keda.sh", "v1alpha1", "scaledobjects", prunable=True,
                     crd="scaledobjects.keda.sh")
SERVICE_MONITOR = Kind("ServiceMonitor", "monitoring.coreos.com", "v1", "servicemonitors", prunable=True,
                       crd="servicemonitors.monitoring.coreos.com")
PROMETHEUS_RULE = Kind("PrometheusRule", "monitoring.coreos.com", "v1", "prometheusrules", prunable=True,
                       crd="prometheusrules.monitoring.coreos.com")
JOB = Kind("Job", "batch", "v1", "jobs", prunable=True)
POD = Kind("Pod", "", "v1", "pods")  # watched (runtime and download pods), never written
# The parent: watched by its own handler (every object, not only managed ones); only its status is written.
INFERENCE_SERVICE = Kind(contract.KIND, contract.GROUP, contract.VERSION, contract.PLURAL, watched=False)
# Cluster-scoped, platform-owned: watched by its own handler; only its status is written.
INFERENCE_QUOTA = Kind(contract.QUOTA_KIND, contract.GROUP, contract.VERSION, contract.QUOTA_PLURAL, watched=False)
# Watched for their labels (quotas' namespaceSelector), never written.
NAMESPACE = Kind("Namespace", "", "v1", "namespaces", watched=False)
# Watched (by name, for the optional APIs), never written.
CUSTOM_RESOURCE_DEFINITION = Kind("CustomResourceDefinition", "apiextensions.k8s.io", "v1",
                                  "customresourcedefinitions", watched=False)

# The operator's own settings: one ConfigMap, watched by name (handlers.py), never written. And the tenant
# policies of services under a quota (NAME-tenant-policy): applied and pruned, never watched (reconcile.py
# knows them from its own writes and from the Deployment's tenant-policy annotation).
CONFIG_MAP = Kind("ConfigMap", "", "v1", "configmaps", watched=False, prunable=True)
# Only created (scheduler.py posts Warnings about InferenceServices and the settings ConfigMap).
EVENT = Kind("Event", "", "v1", "events", watched=False)

KINDS: dict[str, Kind] = {k.kind: k for k in (
    DEPLOYMENT, SERVICE, PERSISTENT_VOLUME_CLAIM, POD_DISRUPTION_BUDGET, HORIZONTAL_POD_AUTOSCALER,
    SCALED_OBJECT, SERVICE_MONITOR, PROMETHEUS_RULE, JOB, POD, INFERENCE_SERVICE, INFERENCE_QUOTA, NAMESPACE,
    CUSTOM_RESOURCE_DEFINITION, CONFIG_MAP, EVENT,
)}
WATCHED: tuple[Kind, ...] = tuple(k for k in KINDS.values() if k.watched)
PRUNABLE: tuple[Kind, ...] = tuple(k for k in KINDS.values() if k.prunable)
# CRD name -> kind, for the APIs that exist only where their operator is installed.
OPTIONAL_APIS: dict[str, str] = {k.crd: k.kind for k in KINDS.values() if k.crd}
