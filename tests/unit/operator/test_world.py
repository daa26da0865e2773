"""The watched view of the cluster: ordering of watch events, optional APIs, and the builders' Observed input."""

from __future__ import annotations

from typing import Any

from inferkube.operator.inputs import ServiceMeta
from inferkube.operator.names import cache_key, download_job_name
from inferkube.operator.parse import parse_spec
from inferkube.operator.world import Children, World, job_state, observe

META = ServiceMeta(name="m", namespace="ns")
SPEC = parse_spec({"model": {"source": "hf://o/m", "revision": "r1"}, "replicas": 2})


def test_world_ignores_stale_events_and_forgets_deleted_children() -> None:
    world = World()
    isvc = {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "5"}}
    assert world.observe_service("ADDED", isvc) == ("ns", "m")
    assert world.observe_service("MODIFIED", {"metadata": {**isvc["metadata"], "resourceVersion": "4"}}) is None
    child = {"kind": "Service", "metadata": {"name": "m", "namespace": "ns", "resourceVersion": "7",
                                             "labels": {"serving.inferkube.dev/inferenceservice": "m"}}}
    assert world.observe_child("ADDED", child) == ("ns", "m")
    assert world.children_of(("ns", "m")).get("Service", "m") is child
    world.observe_service("DELETED", isvc)
    world.observe_child("DELETED", child)
    assert world.children == {}


def test_optional_apis_follow_their_crds() -> None:
    world = World()
    established = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}
    assert world.observe_crd("ADDED", "servicemonitors.monitoring.coreos.com", established) is True
    assert world.observe_crd("MODIFIED", "servicemonitors.monitoring.coreos.com", established) is False
    assert world.observe_crd("ADDED", "widgets.example.com", established) is False
    assert world.apis == {"ServiceMonitor"}
    assert world.observe_crd("DELETED", "servicemonitors.monitoring.coreos.com", established) is True
    assert world.apis == set()


def _job(status: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Job", "metadata": {"name": download_job_name(META, cache_key(SPEC))}, "status": status}


def test_job_state_reads_the_job_controller() -> None:
    assert job_state(None) == "Pending"
    assert job_state(_job({})) == "Pending"
    assert job_state(_job({"active": 1})) == "Downloading"
    assert job_state(_job({"succeeded": 1})) == "Ready"
    assert job_state(_job({"conditions": [{"type": "Failed", "status": "True"}]})) == "Failed"


def test_observed_holds_the_deployment_back_until_a_cache_directory_is_ready() -> None:
    assert observe(SPEC, META, Children(), set()).serving_cache_key is None
    done = Children({"Job": [_job({"succeeded": 1})]})
    assert observe(SPEC, META, done, set()).serving_cache_key == cache_key(SPEC)
    # a new revision still downloading: keep serving the directory the live Deployment uses
    serving_old = {"kind": "Deployment", "metadata": {"name": "m", "annotations": {
        "serving.inferkube.dev/cache-key": "0123456789ab"}}}
    assert observe(SPEC, META, Children({"Deployment": [serving_old]}), set()).serving_cache_key == "0123456789ab"
    observed = observe(SPEC, META, Children(), {"ServiceMonitor", "ScaledObject"})
    assert (observed.monitoring_api, observed.keda_api, observed.alerting_api) == (True, True, False)


def test_observed_reads_the_replicas_the_live_deployment_is_set_to_run() -> None:
    """What an autoscaler last set (the tenant policy splits a memory-backend model budget by it)."""
    scaled = {"kind": "Deployment", "metadata": {"name": "m"}, "spec": {"replicas": 3}}
    assert observe(SPEC, META, Children({"Deployment": [scaled]}), set()).deployment_replicas == 3
    unset = {"kind": "Deployment", "metadata": {"name": "m"}, "spec": {}}
    assert observe(SPEC, META, Children({"Deployment": [unset]}), set()).deployment_replicas == 1, "Kubernetes' default"
    assert observe(SPEC, META, Children(), set()).deployment_replicas is None
