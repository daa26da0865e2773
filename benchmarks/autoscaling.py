"""Autoscaling: one replica's measured capacity, then a bursty day replayed through the HPA algorithm.

    python benchmarks/autoscaling.py            # ~3-4 minutes: one engine start, 8 load levels, two replays

1. Starts the real runtime (vLLM on the CPU, tiny model) with a fixed engine batch (--max-num-seqs) and
   measures its start-up time (process start to /ready) and, at increasing concurrency (closed loop),
   completed requests/s, queue depth, requests in flight and KV-cache use as its /metrics reports them.
2. Replays a bursty arrival trace through Kubernetes' HPA algorithm (benchmarks/hpa_sim.py) with the
   HPA exactly as our builder renders it, replicas that take the measured start-up time to become ready,
   metrics scraped every 30 s, for the generated defaults and one tuned setting.
Prints a table, writes benchmarks/results/autoscaling.json and docs/autoscaling-benchmark.png. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from hpa_sim import Hpa, Outcome, Replica, direction_changes, replay

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator"), str(REPO / "runtime")]

from inferkube.api import contract  # noqa: E402
from inferkube.operator.builders.hpa import build_hpa  # noqa: E402
from inferkube.operator.inputs import Observed  # noqa: E402
from inferkube.operator.parse import parse_service  # noqa: E402
from inferkube.operator.settings import OperatorSettings  # noqa: E402
from inferkube.runtime.tinymodel import build_tiny_model  # noqa: E402
from tests.integration.runtime.conftest import SERVED_NAME, start_runtime_server  # noqa: E402

LEVELS = (1, 2, 4, 8, 12, 16, 24, 32)
SETTINGS: dict[str, dict[str, Any]] = {
    # What a user writes first: queue depth only; everything else is the builder's default behaviour.
    "generated defaults": {"minReplicas": 1, "maxReplicas": 10, "targetQueueDepth": 4},
    # Tuned: requests in flight (a load-proportional signal) next to the queue, and a slower scale-down
    # that keeps capacity between bursts; scale-up stays Kubernetes' default (double or +4 per 15 s).
    "tuned": {"minReplicas": 1, "maxReplicas": 10, "targetQueueDepth": 4, "targetRequestsInFlight": 6,
              "scaleDown": {"stabilizationWindowSeconds": 600, "podsPerPeriod": 1, "periodSeconds": 120}},
}


def gauge(text: str, name: str) -> float:
    """Sum of one metric's samples on a /metrics page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rpartition(" ")[2])
    return total


async def level(base_url: str, concurrency: int, seconds: float) -> dict[str, float]:
    """Closed loop at `concurrency` for `seconds`: completed requests/s and the mean of each gauge."""
    body = {"model": SERVED_NAME, "prompt": "one two three four five six seven eight", "max_tokens": 64,
            "ignore_eos": True}
    done = 0
    stop_at = time.monotonic() + seconds
    samples: list[dict[str, float]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                r = await client.post("/v1/completions", json=body)
                done += r.status_code == 200

        async def sampler() -> None:
            while time.monotonic() < stop_at:
                text = (await client.get("/metrics")).text
                samples.append({k: gauge(text, m) for k, m in (
                    ("queue", contract.METRIC_QUEUE_DEPTH), ("in_flight", contract.METRIC_REQUESTS_IN_FLIGHT),
                    ("running", "vllm:num_requests_running"), ("kv", contract.METRIC_KV_CACHE_USAGE))})
                await asyncio.sleep(0.5)

        start = time.monotonic()
        await asyncio.gather(sampler(), *(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - start
    means = {k: statistics.fmean(s[k] for s in samples) for k in samples[0]}
    return {"concurrency": concurrency, "requests_per_s": done / elapsed, **means}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start one replica, time its start-up, and load it at each concurrency level."""
    model = build_tiny_model(work / "model")
    began = time.monotonic()
    engine = ["--enforce-eager"] + (["--num-gpu-blocks-override", str(args.kv_blocks)] if args.kv_blocks else [])
    server = start_runtime_server(model, ["--max-num-seqs", str(args.batch), "--max-in-flight", "512",
                                          "--max-queued", "2048", "--max-model-len", "512", "--", *engine],
                                  log_path=work / "server.log", ready_timeout=600)
    startup = time.monotonic() - began
    try:
        levels = []
        for concurrency in args.levels:
            levels.append(asyncio.run(level(server.base_url, concurrency, args.seconds)))
            row = levels[-1]
            print(f"  concurrency {concurrency:3d}: {row['requests_per_s']:6.2f} req/s  queue {row['queue']:5.1f}"
                  f"  in flight {row['in_flight']:5.1f}  running {row['running']:5.1f}  KV {row['kv'] * 100:5.2f}%",
                  flush=True)
    finally:
        server.stop()
    return {"startup_seconds": startup, "batch": args.batch, "levels": levels}


def replica_model(capacity: dict[str, Any]) -> Replica:
    """Piecewise-linear throughput and KV use over running sequences, from the measured levels."""
    rows = sorted((min(r["running"], capacity["batch"]), r["requests_per_s"], r["kv"]) for r in capacity["levels"])
    points = [(0.0, 0.0, 0.0)]
    for running, rate, kv in rows:  # monotone: a dip is a stall of this shared machine, not the engine
        points.append((max(running, points[-1][0]), max(rate, points[-1][1]), max(kv, points[-1][2])))

    def interp(x: float, column: int) -> float:
        for (x0, *a), (x1, *b) in zip(points, points[1:], strict=False):
            if x <= x1:
                return a[column] + (b[column] - a[column]) * (x - x0) / max(x1 - x0, 1e-9)
        return max(p[column + 1] for p in points)

    return Replica(capacity["startup_seconds"], capacity["batch"], lambda r: interp(r, 0), lambda r: interp(r, 1))


def trace(mu: float, seed: int = 7) -> tuple[list[float], list[tuple[int, int, float]]]:
    """Arrivals per second over 30 minutes in units of one replica's capacity, and the bursts in it."""
    phases = [(300, 0.6), (240, 4.0), (480, 1.2), (180, 6.0), (600, 0.5)]
    rng = random.Random(seed)
    arrivals: list[float] = []
    bursts = []
    for seconds, factor in phases:
        if factor > 2:
            bursts.append((len(arrivals), len(arrivals) + seconds, factor * mu))
        for second in range(seconds):
            if second % 15 == 0:
                noise = rng.uniform(0.85, 1.15)
            arrivals.append(factor * mu * noise)
    return arrivals, bursts


def hpa_spec(autoscaling: dict[str, Any]) -> dict[str, Any]:
    """The HPA our builder renders for an InferenceService with this autoscaling block."""
    obj = {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.KIND,
           "metadata": {"name": "bench", "namespace": "llm"},
           "spec": {"model": {"source": "hf://org/m"}, "autoscaling": autoscaling}}
    spec, meta = parse_service(obj)
    return dict(build_hpa(spec, meta, OperatorSettings(), Observed(serving_cache_key="k"))["spec"])


def summarize(out: Outcome, bursts: list[tuple[int, int, float]], mu: float, max_replicas: int) -> dict[str, Any]:
    """Time to scale up per burst, peak queue, replica-minutes, flapping, mean wait in the queue."""
    catch_up = []
    for start, end, rate in bursts:
        needed = min(max_replicas, math.ceil(rate / mu))
        reached = next((t for t in range(start, len(out.ready)) if out.ready[t] >= needed), None)
        catch_up.append(None if reached is None or reached > end else reached - start)
    return {"scale_up_seconds": catch_up, "peak_queue": max(out.queue),
            "replica_minutes": sum(out.replicas) / 60, "direction_changes": direction_changes(out.replicas),
            "mean_queue_wait_s": sum(out.queue) / sum(out.load), "max_replicas_used": max(out.replicas)}


def plot(path: Path, outcomes: dict[str, Outcome], mu: float) -> None:
    """Load, replicas and queue over time for each setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_load, ax_rep, ax_queue) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    first = next(iter(outcomes.values()))
    minutes = [t / 60 for t in first.time]
    ax_load.plot(minutes, first.load, color="black", lw=0.8, label="arrivals (req/s)")
    for name, out in outcomes.items():
        ax_load.plot(minutes, [r * mu for r in out.ready], lw=1, label=f"ready capacity, {name}")
        ax_rep.step(minutes, out.replicas, where="post", label=f"replicas, {name}")
        ax_rep.step(minutes, out.ready, where="post", ls=":", label=f"ready, {name}")
        ax_queue.plot(minutes, out.queue, lw=1, label=name)
    ax_load.set_ylabel("requests/s")
    ax_rep.set_ylabel("replicas")
    ax_queue.set_ylabel("requests waiting")
    ax_queue.set_xlabel("minutes")
    for ax in (ax_load, ax_rep, ax_queue):
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    fig.suptitle("HPA replay: measured tiny-model replica, bursty trace")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    """Measure, replay, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="engine batch per replica (--max-num-seqs)")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of load per level")
    parser.add_argument("--kv-blocks", type=int, default=64,
                        help="KV-cache blocks (--num-gpu-blocks-override: a small cache, so KV use moves as with a real model; 0: vLLM's sizing)")
    parser.add_argument("--capacity", help="reuse a capacity JSON written by an earlier run (skips the engine)")
    parser.add_argument("--plot", default=str(REPO / "docs" / "autoscaling-benchmark.png"))
    args = parser.parse_args()
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    if args.capacity:
        capacity = json.loads(Path(args.capacity).read_text())["capacity"]
    else:
        print("measuring one replica ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            capacity = measure(args, Path(tmp))
    replica = replica_model(capacity)
    mu = replica.throughput(replica.batch)
    arrivals, bursts = trace(mu)
    print(f"start-up {capacity['startup_seconds']:.1f} s, capacity {mu:.2f} req/s per replica (batch {replica.batch})")
    outcomes, summaries = {}, {}
    for name, autoscaling in SETTINGS.items():
        spec = hpa_spec(autoscaling)
        outcomes[name] = replay(Hpa(spec), replica, arrivals)
        summaries[name] = {"hpa": spec, **summarize(outcomes[name], bursts, mu, spec["maxReplicas"])}
    report(summaries)
    plot(Path(args.plot), outcomes, mu)
    (results / "autoscaling.json").write_text(json.dumps({"capacity": capacity, "settings": summaries}, indent=2))
    print(f"wrote {args.plot} and {results / 'autoscaling.json'}")
    return 0


def report(summaries: dict[str, dict[str, Any]]) -> None:
    """Print the comparison table."""
    names = list(summaries)
    print(f"\n| metric | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    rows = [("time to scale up, burst 1 / burst 2 (s)",
             lambda s: " / ".join("not reached" if v is None else f"{v}" for v in s["scale_up_seconds"])),
            ("peak queue (requests)", lambda s: f"{s['peak_queue']:.0f}"),
            ("mean wait in queue per request (s)", lambda s: f"{s['mean_queue_wait_s']:.1f}"),
            ("replica-minutes (30 min)", lambda s: f"{s['replica_minutes']:.0f}"),
            ("direction changes (flapping)", lambda s: f"{s['direction_changes']}"),
            ("most replicas", lambda s: f"{s['max_replicas_used']}")]
    for label, cell in rows:
        print(f"| {label} | {' | '.join(cell(summaries[n]) for n in names)} |")


if __name__ == "__main__":
    sys.exit(main())
