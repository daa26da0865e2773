"""Every CEL rule of the CRD, evaluated with cel-python on valid and invalid objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from inferkube.operator.validation import validate_object

BASE: dict[str, Any] = {
    "apiVersion": "serving.inferkube.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "m"},
    "spec": {"model": {"source": "hf://org/model"}},
}


def obj(**spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out["spec"].update(spec)
    return out


def messages(o: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [str(p) for p in validate_object(o, old)]


def test_base_object_is_valid() -> None:
    assert messages(BASE) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2, "targetQueueDepth": 4}}, "minReplicas must be <="),
        ({"autoscaling": {"maxReplicas": 2}}, "needs at least one target"),
        ({"autoscaling": {"minReplicas": 0, "maxReplicas": 2, "targetQueueDepth": 4}}, "minReplicas"),
        ({"autoscaling": {"maxReplicas": 2, "targetGpuUtilization": 101}}, "targetGpuUtilization"),
        ({"replicas": 2, "autoscaling": {"maxReplicas": 3, "targetQueueDepth": 4}}, "either replicas or autoscaling"),
        ({"runtime": {"tensorParallelSize": 4}, "resources": {"accelerator": "nvidia-h100-80gb", "gpus": 6}},
         "positive multiple of runtime.tensorParallelSize"),
        ({"runtime": {"tensorParallelSize": 2}}, "positive multiple of runtime.tensorParallelSize"),
        ({"resources": {"gpus": 1}}, "needs resources.accelerator"),
        ({"api": {"rateLimitBackend": "redis"}}, "needs api.redisUrlSecret"),
        ({"responseCache": {"enabled": True, "backend": "redis"}}, "responseCache.backend redis needs api.redisUrlSecret"),
        ({"responseCache": {"semantic": {"model": "builtin:tiny-embed"}}},
         "responseCache.semantic needs responseCache.enabled"),
        ({"responseCache": {"enabled": True, "semantic": {"model": "builtin:tiny-embed", "similarityThreshold": 0.2}}},
         "similarityThreshold"),
        ({"responseCache": {"enabled": True, "semantic": {"model": "/etc/passwd"}}}, "model"),
        ({"responseCache": {"enabled": True, "scope": "everyone"}}, "scope"),
    ],
)
def test_invalid_specs_fail_with_the_rule_message(spec: dict[str, Any], expected: str) -> None:
    found = messages(obj(**spec))
    assert any(expected in m for m in found), found


@pytest.mark.parametrize(
    "spec",
    [
        {"autoscaling": {"minReplicas": 2, "maxReplicas": 2, "targetKvCacheUsage": 80}},
        {"autoscaling": {"maxReplicas": 3, "targetRequestsInFlight": 16}},
        {"autoscaling": {"maxReplicas": 3, "targetGpuUtilization": 90}},
        {"replicas": 0},
        {"runtime": {"tensorParallelSize": 4}, "resources": {"accelerator": "nvidia-h100-80gb", "gpus": 8}},
        {"api": {"rateLimitBackend": "redis", "redisUrlSecret": {"name": "r", "key": "url"}}},
        {"responseCache": {"enabled": True, "backend": "redis"}, "api": {"redisUrlSecret": {"name": "r"}}},
        {"responseCache": {"enabled": True, "semantic": {"model": "hf://sentence-transformers/all-MiniLM-L6-v2"}}},
    ],
)
def test_valid_specs_pass(spec: dict[str, Any]) -> None:
    assert messages(obj(**spec)) == []


def test_name_length_rule_at_the_root() -> None:
    long = obj()
    long["metadata"]["name"] = "x" * 46
    assert any("at most 45 characters" in m for m in messages(long))


def test_rollout_that_can_never_progress_is_rejected() -> None:
    for rollout in ({"maxUnavailable": 0}, {"maxUnavailable": "0%", "maxSurge": 0}, {"maxSurge": "0%", "maxUnavailable": 0}):
        assert any("cannot both be 0" in m for m in messages(obj(rollout=rollout))), rollout
    for rollout in ({"maxUnavailable": 0, "maxSurge": 1}, {"maxSurge": 0}, {"maxUnavailable": "25%"}):
        assert messages(obj(rollout=rollout)) == [], rollout


def test_model_source_may_change_even_with_a_retained_cache() -> None:
    """Every source+revision has its own directory in the claim, so a retained claim never mixes models."""
    old = obj(cache={"reclaimPolicy": "Retain"})
    new = obj(cache={"reclaimPolicy": "Retain"}, model={"source": "hf://org/other"})
    assert messages(new, old) == []


def test_schema_errors_name_the_field_path() -> None:
    bad = obj(resources={"cpu": "lots"}, replicas=-1)
    bad["spec"]["model"]["source"] = "s3://bucket/model"
    found = messages(bad)
    assert any(m.startswith(".spec.resources.cpu:") for m in found)
    assert any(m.startswith(".spec.replicas:") for m in found)
    assert any(m.startswith(".spec.model.source:") for m in found)


def test_unknown_fields_are_reported() -> None:
    bad = obj(replicas=1)
    bad["spec"]["model"]["revison"] = "typo"
    assert ".spec.model.revison: unknown field" in messages(bad)
