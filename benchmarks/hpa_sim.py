"""Kubernetes' HorizontalPodAutoscaler algorithm (autoscaling/v2) replayed over a simulated service.

Follows the documented algorithm and the controller's replica calculator: desired = ceil(ratio x pods)
with a 10 % tolerance; pods without metrics (starting pods are not in the Service's endpoints, so nothing
scrapes them) count as 0 when scaling up and as at-target when scaling down, and a recomputed ratio that
flips direction cancels the change; several metrics take the largest proposal; then the behavior:
stabilization windows (min of recommendations for scale-up, max for scale-down) and rate policies
(Pods/Percent per period, selectPolicy Max) with Kubernetes' defaults for what the HPA leaves out.
Used by benchmarks/autoscaling.py; pure (no I/O, no clock).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

TOLERANCE = 0.1
SYNC_PERIOD = 15.0
DEFAULT_SCALE_UP = {"stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                                 {"type": "Pods", "value": 4, "periodSeconds": 15}]}
DEFAULT_SCALE_DOWN = {"stabilizationWindowSeconds": 300,
                      "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def metric_replicas(values: Sequence[float], missing: int, target: float, current: int) -> int:
    """The replica count one Pods metric asks for (replica_calculator's plain-metric path)."""
    ratio = sum(values) / len(values) / target if values else 0.0
    if missing == 0:
        return current if abs(1.0 - ratio) <= TOLERANCE else math.ceil(ratio * len(values))
    filled = list(values) + [0.0 if ratio > 1.0 else target] * missing
    new_ratio = sum(filled) / len(filled) / target
    if abs(1.0 - new_ratio) <= TOLERANCE or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    proposal = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
        return current
    return proposal


@dataclass
class Hpa:
    """One HPA's state: its spec (as our builder renders it), past recommendations and scale events."""

    spec: dict[str, Any]
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, +added / -removed)

    def _rules(self, direction: str) -> dict[str, Any]:
        default = DEFAULT_SCALE_UP if direction == "scaleUp" else DEFAULT_SCALE_DOWN
        given = (self.spec.get("behavior") or {}).get(direction) or {}
        return {"stabilizationWindowSeconds": given.get("stabilizationWindowSeconds",
                                                        default["stabilizationWindowSeconds"]),
                "policies": given.get("policies", default["policies"])}

    def _stabilize(self, now: float, desired: int, current: int) -> int:
        up_cut = now - self._rules("scaleUp")["stabilizationWindowSeconds"]
        down_cut = now - self._rules("scaleDown")["stabilizationWindowSeconds"]
        up = min([r for t, r in self.recommendations if t > up_cut] + [desired])
        down = max([r for t, r in self.recommendations if t > down_cut] + [desired])
        self.recommendations = [(t, r) for t, r in self.recommendations if t > min(up_cut, down_cut)]
        self.recommendations.append((now, desired))
        return min(max(current, up), down)

    def _changed_in(self, now: float, period: float, sign: int) -> int:
        return sum(abs(n) for t, n in self.events if t > now - period and n * sign > 0)

    def _limit(self, now: float, current: int, direction: str) -> int:
        proposals = []
        for policy in self._rules(direction)["policies"]:
            if direction == "scaleUp":
                start = current - self._changed_in(now, policy["periodSeconds"], +1)
                proposals.append(start + policy["value"] if policy["type"] == "Pods"
                                 else math.ceil(start * (1 + policy["value"] / 100)))
            else:
                start = current + self._changed_in(now, policy["periodSeconds"], -1)
                proposals.append(start - policy["value"] if policy["type"] == "Pods"
                                 else int(start * (1 - policy["value"] / 100)))
        return max(max(proposals), current) if direction == "scaleUp" else min(min(proposals), current)

    def decide(self, now: float, current: int, ready_values: dict[str, list[float]], missing: int) -> int:
        """The replica count after one sync: metrics -> recommendation -> stabilization -> rate limits."""
        desired = 0
        for metric in self.spec["metrics"]:
            name = metric["pods"]["metric"]["name"]
            target = quantity(metric["pods"]["target"]["averageValue"])
            desired = max(desired, metric_replicas(ready_values[name], missing, target, current))
        desired = self._stabilize(now, desired, current)
        if desired > current:
            desired = min(desired, self._limit(now, current, "scaleUp"))
        elif desired < current:
            desired = max(desired, self._limit(now, current, "scaleDown"))
        desired = max(self.spec["minReplicas"], min(self.spec["maxReplicas"], desired))
        if desired != current:
            self.events.append((now, desired - current))
            self.events = [(t, n) for t, n in self.events if t > now - 1800]
        return desired


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity as a float ('800m' -> 0.8)."""
    text = str(text)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@dataclass(frozen=True)
class Replica:
    """Measured behaviour of one replica: per concurrency, throughput and the metrics it reports."""

    startup_seconds: float
    batch: int                                  # sequences the engine runs at once (max_num_seqs)
    throughput: Callable[[float], float]        # requests/s completed with this many running
    kv_usage: Callable[[float], float]          # KV-cache use 0..1 with this many running


@dataclass
class Outcome:
    """Time series of one replay (one sample per second) and its summary."""

    time: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)


def replay(hpa: Hpa, replica: Replica, arrivals: Sequence[float], scrape_interval: float = 30.0) -> Outcome:
    """Feed `arrivals` (requests per second, one value per second) through replicas scaled by `hpa`."""
    out = Outcome()
    replicas = hpa.spec["minReplicas"]
    starting: list[float] = []   # ready times of pods not yet ready
    ready = replicas
    backlog = 0.0                # requests in the system (running + waiting)
    kinds = _metric_kinds(hpa.spec)
    scraped: dict[str, float] = {}  # per-pod values at the last scrape (pods are balanced evenly)
    for second, rate in enumerate(arrivals):
        now = float(second)
        ready += sum(1 for t in starting if t <= now)
        starting = [t for t in starting if t > now]
        backlog += rate
        running = min(backlog, replica.batch * ready)
        per_pod_running = running / ready if ready else 0.0
        backlog = max(0.0, backlog - replica.throughput(per_pod_running) * ready)
        queue = max(0.0, backlog - replica.batch * ready)
        if second % scrape_interval == 0 or not scraped:
            # in flight = handed to the engine (running + the engine's own waiting list): all of a pod's requests
            scraped = {"queue": queue / ready, "in_flight": backlog / ready, "kv": replica.kv_usage(per_pod_running)}
        if second % SYNC_PERIOD == 0 and second > 0:
            values = {name: [scraped[kind]] * ready for name, kind in kinds.items()}
            wanted = hpa.decide(now, replicas, values, missing=len(starting))
            if wanted > replicas:
                starting += [now + replica.startup_seconds] * (wanted - replicas)
            elif wanted < replicas:
                drop = replicas - wanted
                cut = min(drop, len(starting))
                starting = starting[:len(starting) - cut]
                ready -= drop - cut
            replicas = wanted
        out.time.append(now)
        out.load.append(rate)
        out.replicas.append(replicas)
        out.ready.append(ready)
        out.queue.append(queue)
    return out


def _metric_kinds(spec: dict[str, Any]) -> dict[str, str]:
    """Which simulated quantity each HPA metric reads (by the metric's name)."""
    kinds = {}
    for metric in spec["metrics"]:
        name = metric["pods"]["metric"]["name"]
        kinds[name] = "queue" if "queue" in name else "kv" if "kv_cache" in name else "in_flight"
    return kinds


def direction_changes(series: Sequence[int]) -> int:
    """How often a series turns from rising to falling or back (flapping)."""
    changes, last = 0, 0
    for before, after in zip(series, series[1:], strict=False):
        step = (after > before) - (after < before)
        if step and last and step != last:
            changes += 1
        last = step or last
    return changes
