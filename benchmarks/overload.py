"""Refusal latency under overload: how fast the runtime says no, for small and for 200 KB prompts.

    python benchmarks/overload.py                 # 5 rounds
    python benchmarks/overload.py --rounds 9 --bound 8

Starts `inferkube-runtime serve` on the tiny model with `--max-in-flight B --max-queued B` and two tenants
(one unlimited, one at 30 requests/minute). Per round and prompt size (small: 5 bytes; large: 200 KB):

- admission: 2 x B long requests fill every slot and the queue, then a burst of 10 x B requests from the
  unlimited tenant, all refused 429 `server_overloaded`;
- rate limit: a burst of 10 x B requests from the tenant whose request bucket was just emptied, refused
  429 `rate_limit_exceeded` (the bucket refills one request per 2 s, so one may get through);
- floor: a burst of 10 x B `GET /health` (the cheapest answer the server has) from the same client, so the
  refusal numbers can be read against what any answer costs on this machine.

Reports per scenario the median over rounds of each round's p50 and p99 refusal latency (client-side, from
sending the request to its answer), and writes JSON beside this file. The shared 2-core machines stall
every process for seconds at random: a round in which any refusal took over 5 s is reported and left out
of the medians (see `stalled_rounds`). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_vs_vllm import free_port, start, stop  # noqa: E402 - the sibling benchmark's server helpers

SERVED = "tiny"
MAIN_KEY, LIMITED_KEY = "sk-bench-main-0123", "sk-bench-limited-4567"
SIZES = {"small": 5, "200KB": 200_000}
STALL_SECONDS = 5.0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def burst(client: httpx.AsyncClient, body: bytes | None, key: str, count: int) -> list[tuple[int, float]]:
    """`count` requests at once (a completion, or `GET /health` when body is None); each one's status and ms."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def one() -> tuple[int, float]:
        start_at = time.perf_counter()
        if body is None:
            r = await client.get("/health")
        else:
            r = await client.post("/v1/completions", content=body, headers=headers)
        return r.status_code, (time.perf_counter() - start_at) * 1000

    return await asyncio.gather(*(one() for _ in range(count)))


async def fill(client: httpx.AsyncClient, bound: int) -> list[asyncio.Task]:
    """Occupy every in-flight slot and the whole queue with long requests; return once they are admitted."""
    body = json.dumps({"model": SERVED, "prompt": "hold", "max_tokens": 1500, "ignore_eos": True}).encode()
    headers = {"Authorization": f"Bearer {MAIN_KEY}", "Content-Type": "application/json"}
    tasks = [asyncio.create_task(client.post("/v1/completions", content=body, headers=headers))
             for _ in range(2 * bound)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        page = (await client.get("/metrics")).text
        held = sum(float(line.rpartition(" ")[2]) for line in page.splitlines()
                   if line.startswith(("inferkube_requests_in_flight{", "inferkube_queue_depth{")))
        if held >= 2 * bound:
            return tasks
        await asyncio.sleep(0.1)
    raise RuntimeError("the long requests were never all admitted")


async def one_round(base_url: str, bound: int) -> dict[str, list[tuple[int, float]]]:
    """One round of every scenario and size."""
    out: dict[str, list[tuple[int, float]]] = {}
    limits = httpx.Limits(max_connections=20 * bound + 8, max_keepalive_connections=20 * bound + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        bodies = {size: json.dumps({"model": SERVED, "prompt": "x" * n, "max_tokens": 16}).encode()
                  for size, n in SIZES.items()}
        for size, body in bodies.items():
            await _exhaust(client)
            out[f"rate_limit/{size}"] = await burst(client, body, LIMITED_KEY, 10 * bound)
        out["floor/GET /health"] = await burst(client, None, MAIN_KEY, 10 * bound)
        holders = await fill(client, bound)
        for size, body in bodies.items():
            out[f"admission/{size}"] = await burst(client, body, MAIN_KEY, 10 * bound)
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
    return out


def summarize(rounds: list[dict[str, list[tuple[int, float]]]]) -> dict[str, dict]:
    """Per scenario: median over the rounds without a stall of each round's p50 and p99."""
    summary: dict[str, dict] = {}
    for name in rounds[0]:
        per_round, stalled = [], 0
        for r in rounds:
            expected = 200 if name.startswith("floor/") else 429
            latencies = [ms for status, ms in r[name] if status == expected]
            others = sorted({status for status, _ in r[name] if status != expected})
            assert len(latencies) >= 0.9 * len(r[name]), f"{name}: most requests were not refused: {others}"
            if max(latencies) > STALL_SECONDS * 1000:
                stalled += 1
                continue
            per_round.append((percentile(latencies, 50), percentile(latencies, 99)))
        summary[name] = {
            "p50_ms": round(statistics.median(p for p, _ in per_round), 1) if per_round else None,
            "p99_ms": round(statistics.median(q for _, q in per_round), 1) if per_round else None,
            "rounds": len(per_round), "stalled_rounds": stalled}
    return summary


def main() -> int:
    """Start the runtime, run the rounds, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bound", type=int, default=8, help="--max-in-flight and --max-queued")
    args = parser.parse_args()
    from inferkube.runtime.tinymodel import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="overload-"))
    model = build_tiny_model(work / "model")
    tenants = work / "tenants.yaml"
    tenants.write_text(f"tenants:\n  - name: main\n    key: {MAIN_KEY}\n"
                       f"  - name: limited\n    key: {LIMITED_KEY}\n    requestsPerMinute: 30\n")
    port = free_port()
    cmd = [sys.executable, "-m", "inferkube.runtime.cli", "serve", "--model", str(model), "--served-model-name",
           SERVED, "--host", "127.0.0.1", "--port", str(port), "--tenants-file", str(tenants),
           "--max-in-flight", str(args.bound), "--max-queued", str(args.bound), "--log-level", "warning",
           "--", "--enforce-eager"]
    proc = start(cmd, port, "/ready", work / "server.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        rounds = [asyncio.run(one_round(base_url, args.bound)) for _ in range(args.rounds)]
    finally:
        stop(proc)
    summary = summarize(rounds)
    print(f"refusal latency, burst of {10 * args.bound} (bound {args.bound}), medians over rounds")
    print(f"{'scenario':<22}{'p50 ms':>10}{'p99 ms':>10}{'rounds':>8}{'stalled':>9}")
    for name, row in summary.items():
        print(f"{name:<22}{row['p50_ms']!s:>10}{row['p99_ms']!s:>10}{row['rounds']:>8}{row['stalled_rounds']:>9}")
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({"bound": args.bound, "rounds": args.rounds, "summary": summary}, indent=2) + "\n")
    print(f"written to {out}")
    return 0


async def _exhaust(client: httpx.AsyncClient) -> None:
    """Empty the limited tenant's request bucket (it refills one request every 2 s)."""
    body = json.dumps({"model": SERVED, "prompt": "x", "max_tokens": 1}).encode()
    for _ in range(40):
        r = await client.post("/v1/completions", content=body, headers={
            "Authorization": f"Bearer {LIMITED_KEY}", "Content-Type": "application/json"})
        if r.status_code == 429:
            return


if __name__ == "__main__":
    sys.exit(main())
