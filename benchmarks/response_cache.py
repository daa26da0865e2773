"""Side by side: the runtime with the response cache off, in memory, and in Redis, same load.

    python benchmarks/response_cache.py            # 200 requests, 40 % repeats, concurrency 16, 3 configs

Builds the tiny model, starts a loopback `redis-server`, then for each configuration starts
`inferkube-runtime serve` and drives it with the same workload: greedy (`temperature: 0`) streaming chat
requests with ~64-token prompts and 64 output tokens (`ignore_eos`), where 40 % of the requests repeat an
earlier request that has already been answered. Reports output throughput, TTFT p50/p99 (first content
chunk; over all requests, and over the requests the engine served), hit latency p50/p99 under load and idle (200 sequential non-streaming hits, nothing else
running), and the hit ratio. With --rounds N the configurations alternate N times (order reversed every
other round) and the medians are reported. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from runtime_vs_vllm import free_port, start, stop

SERVED = "tiny"
CONFIGS = ("off", "memory", "redis")
WORDS = ("cluster node pod model token cache replica tenant queue engine request answer quota budget "
         "stream latency metric operator rollout revision secret volume service gateway").split()
COLUMNS = [("throughput", "output tok/s"), ("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p99_ms", "TTFT p99 ms"),
           ("hit_p50_ms", "hit p50 ms (load)"), ("hit_p99_ms", "hit p99 ms (load)"),
           ("idle_hit_p50_ms", "hit p50 ms (idle)"), ("idle_hit_p99_ms", "hit p99 ms (idle)"),
           ("miss_ttft_p50_ms", "miss TTFT p50 ms"), ("miss_ttft_p99_ms", "miss TTFT p99 ms"),
           ("hit_ratio", "hit ratio")]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`, NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def make_prompt(rng: random.Random, words: int) -> str:
    """A prompt of `words` random words (about one token each for the tiny tokenizer)."""
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def one_request(client: httpx.AsyncClient, prompt: str, output_len: int) -> dict[str, Any]:
    """One streaming greedy chat request; its TTFT, end-to-end time, tokens and cache status."""
    body = {"model": SERVED, "messages": [{"role": "user", "content": prompt}], "max_tokens": output_len,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    start_t = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        status = response.headers.get("x-inferkube-cache", "off")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", ())):
                ttft = time.perf_counter() - start_t
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return {"ttft": ttft, "e2e": time.perf_counter() - start_t, "tokens": tokens, "cache": status}


def plan(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """The same workload for every configuration: (prompt, is_repeat) per request. Exactly
    `repeat_ratio` of the requests repeat one issued at least `concurrency` positions earlier (so it has
    normally been answered already); the rest are fresh random prompts."""
    rng = random.Random(args.seed)
    count = args.num_requests
    eligible = list(range(min(count, args.concurrency), count))
    repeats = set(rng.sample(eligible, min(len(eligible), round(args.repeat_ratio * count))))
    prompts: list[tuple[str, bool]] = []
    for i in range(count):
        if i in repeats:
            prompts.append((prompts[rng.randrange(0, i - args.concurrency + 1)][0], True))
        else:
            prompts.append((make_prompt(rng, args.input_len), False))
    return prompts


async def workload(base_url: str, args: argparse.Namespace, cached: bool) -> dict[str, Any]:
    """Run the planned workload at bounded concurrency (requests start in plan order); returns the
    per-request records, the wall time and, with a cache, the idle hit latencies."""
    work = plan(args)
    queue: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    records: list[dict[str, Any]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            prompt, repeat = queue.get_nowait()
            record = await one_request(client, prompt, args.output_len)
            record["repeat"] = repeat
            records.append(record)

    async with httpx.AsyncClient(base_url=base_url, timeout=300,
                                 limits=httpx.Limits(max_connections=args.concurrency)) as client:
        warm = [one_request(client, make_prompt(random.Random(-i), args.input_len), 4) for i in range(4)]
        await asyncio.gather(*warm)
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
        wall = time.perf_counter() - began
        idle = await idle_hits(client, work[0][0], args) if cached else []
    return {"records": records, "wall": wall, "idle_hits": idle}


async def idle_hits(client: httpx.AsyncClient, prompt: str, args: argparse.Namespace) -> list[float]:
    """Latency of sequential non-streaming requests for an answered prompt, nothing else running."""
    body = {"model": SERVED, "messages": [{"role": "user", "content": prompt}], "max_tokens": args.output_len,
            "temperature": 0, "ignore_eos": True}
    times = []
    for _ in range(args.idle_hits):
        t = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=body)
        elapsed = time.perf_counter() - t
        if response.headers.get("x-inferkube-cache") == "hit":
            times.append(elapsed)
    return times


def summarize_run(run: dict[str, Any]) -> dict[str, float]:
    """Throughput, TTFT, hit latency and hit ratio of one run."""
    records = run["records"]
    hits = [r["e2e"] for r in records if r["cache"] == "hit"]
    ttfts = [r["ttft"] for r in records if r["ttft"] is not None]
    engine_ttfts = [r["ttft"] for r in records if r["ttft"] is not None and r["cache"] != "hit"]
    ms = 1000.0
    return {"throughput": sum(r["tokens"] for r in records) / run["wall"],
            "ttft_p50_ms": percentile(ttfts, 50) * ms, "ttft_p99_ms": percentile(ttfts, 99) * ms,
            "hit_p50_ms": percentile(hits, 50) * ms, "hit_p99_ms": percentile(hits, 99) * ms,
            "idle_hit_p50_ms": percentile(run["idle_hits"], 50) * ms,
            "idle_hit_p99_ms": percentile(run["idle_hits"], 99) * ms,
            "miss_ttft_p50_ms": percentile(engine_ttfts, 50) * ms,
            "miss_ttft_p99_ms": percentile(engine_ttfts, 99) * ms,
            "hit_ratio": len(hits) / len(records) if records else 0.0,
            "repeat_ratio": sum(r["repeat"] for r in records) / len(records) if records else 0.0}


def server_command(config: str, model_dir: Path, port: int, redis_url: str) -> list[str]:
    """`inferkube-runtime serve` with the response cache off, in memory, or in Redis."""
    cmd = [sys.executable, "-m", "inferkube.runtime.cli", "serve", "--model", str(model_dir),
           "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port),
           "--max-in-flight", "256", "--max-queued", "256"]
    if config == "memory":
        cmd += ["--response-cache"]
    elif config == "redis":
        cmd += ["--response-cache", "--response-cache-backend", "redis", "--redis-url", redis_url]
    return cmd


def start_redis(work: Path) -> tuple[subprocess.Popen, str]:
    """A loopback redis-server without persistence; returns (process, url)."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(host="127.0.0.1", port=port).ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def print_table(summary: dict[str, dict[str, float]]) -> None:
    """One column per configuration, one row per metric."""
    print(f"\n{'metric':<20}" + "".join(f"{c:>12}" for c in CONFIGS))
    for key, title in COLUMNS:
        print(f"{title:<20}" + "".join(f"{summary[c][key]:>12.3f}" for c in CONFIGS))


def main() -> int:
    """Run every configuration (alternating over rounds) and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=200)
    parser.add_argument("--repeat-ratio", type=float, default=0.4)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--idle-hits", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()

    from inferkube.runtime.tinymodel import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="response-cache-bench-"))
    model_dir = build_tiny_model(work / "tiny-model")
    redis_proc, redis_url = start_redis(work)
    results: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    try:
        for round_no in range(args.rounds):
            for config in (CONFIGS if round_no % 2 == 0 else CONFIGS[::-1]):
                port = free_port()
                log = work / f"{config}-{round_no}.log"
                redis.Redis.from_url(redis_url).flushdb()  # every run starts from an empty cache
                print(f"== round {round_no + 1}: cache {config} (log {log})", flush=True)
                proc = start(server_command(config, model_dir, port, redis_url), port, "/ready", log)
                try:
                    run = asyncio.run(workload(f"http://127.0.0.1:{port}", args, config != "off"))
                finally:
                    stop(proc)
                results[config].append(summarize_run(run))
                print(json.dumps({k: round(v, 3) for k, v in results[config][-1].items()}), flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    summary = {c: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for c, runs in results.items()}
    print_table(summary)
    report = {"config": {k: v for k, v in vars(args).items() if k != "output"}, "summary": summary,
              "rounds": results}
    args.output.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
