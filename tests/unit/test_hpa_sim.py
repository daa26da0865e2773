"""The benchmark's HPA replay follows Kubernetes' documented algorithm (tolerance, missing pods, behavior)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from hpa_sim import Hpa, metric_replicas, quantity  # noqa: E402

QUEUE = "inferkube_queue_depth"


def _spec(**behavior: dict) -> dict:
    return {"minReplicas": 1, "maxReplicas": 20, "behavior": behavior,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": QUEUE},
                                                  "target": {"type": "AverageValue", "averageValue": "4"}}}]}


def test_ratio_and_tolerance() -> None:
    assert metric_replicas([4.3, 4.3], 0, 4, 2) == 2        # within 10 %: no change
    assert metric_replicas([8.0, 8.0], 0, 4, 2) == 4        # ceil(2 x 2.0)
    assert metric_replicas([0.0, 0.0], 0, 4, 2) == 0        # the min clamp comes later
    assert quantity("800m") == 0.8 and quantity("4") == 4


def test_starting_pods_count_as_zero_when_scaling_up_and_can_cancel_it() -> None:
    assert metric_replicas([8.0], 1, 4, 2) == 2             # (8 + 0) / 2 / 4 = 1.0: within tolerance
    assert metric_replicas([12.0], 1, 4, 2) == 3            # (12 + 0) / 2 / 4 = 1.5 -> ceil(3)
    assert metric_replicas([1.0], 1, 4, 2) == 2             # scale-down: missing = target, ratio 0.625 -> 2


def test_scale_down_waits_for_the_stabilization_window_and_policy() -> None:
    hpa = Hpa(_spec(scaleDown={"stabilizationWindowSeconds": 60,
                               "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}))
    assert hpa.decide(0, 4, {QUEUE: [4.0] * 4}, 0) == 4
    assert hpa.decide(15, 4, {QUEUE: [0.0] * 4}, 0) == 4    # the 4 recommended at t=0 is still in the window
    assert hpa.decide(75, 4, {QUEUE: [0.0] * 4}, 0) == 3    # window passed; one pod per 30 s
    assert hpa.decide(90, 3, {QUEUE: [0.0] * 3}, 0) == 3
    assert hpa.decide(120, 3, {QUEUE: [0.0] * 3}, 0) == 2


def test_default_scale_up_allows_double_or_four_pods_per_15_seconds() -> None:
    hpa = Hpa(_spec())
    assert hpa.decide(0, 1, {QUEUE: [400.0]}, 0) == 5       # max(100 % of 1, +4 pods)
    hpa = Hpa(_spec())
    assert hpa.decide(0, 10, {QUEUE: [400.0] * 10}, 0) == 20  # 100 % of 10, capped at maxReplicas
