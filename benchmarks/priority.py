"""Priority and fair share under a flood: an `interactive` tenant's TTFT while a `bulk` tenant floods one runtime.

    python benchmarks/priority.py                 # 64 bulk streams x 128 tokens, 20 interactive requests, 2 rounds

Two runtimes on the tiny model (real vLLM on the CPU), same engine settings, both up for the whole run:
`--scheduling-policy priority` (priority + weighted fair-share admission, vLLM's priority scheduler with
each request's priority) and `--scheduling-policy fcfs` (FIFO admission, vLLM's FCFS). The tenants file
gives `interactive` priority high and `bulk` priority low. For each runtime, alternating the order every
round: `interactive` alone, then `interactive` while `bulk` keeps `--flood` long generations in flight.
Reports interactive TTFT p50/p99 (streaming, arrival to first token) and bulk's completed tokens/s (no
starvation). Loopback only; every loop is bounded in count and time. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_vs_vllm import free_port, start, stop  # noqa: E402  (the sibling benchmark's process helpers)

SERVED = "tiny"
KEYS = {"interactive": "sk-interactive-0123", "bulk": "sk-bulk-4567"}
MODES = ("priority", "fcfs")


def tenants_file(directory: Path) -> Path:
    """interactive at high priority, bulk at low priority; no rate limits (admission is what is measured)."""
    path = directory / "tenants.yaml"
    path.write_text("tenants:\n"
                    f"  - {{name: interactive, key: {KEYS['interactive']}, priority: high}}\n"
                    f"  - {{name: bulk, key: {KEYS['bulk']}, priority: low}}\n")
    return path


def server_command(model_dir: Path, port: int, tenants: Path, mode: str, args: argparse.Namespace) -> list[str]:
    """One runtime; only --scheduling-policy differs between the two."""
    return [sys.executable, "-m", "inferkube.runtime.cli", "serve", "--model", str(model_dir),
            "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port), "--tenants-file", str(tenants),
            "--max-in-flight", str(args.max_in_flight), "--max-queued", "512", "--max-tokens-cap", "4096",
            "--scheduling-policy", mode, *(["--max-num-seqs", str(args.max_num_seqs)] if args.max_num_seqs else [])]


async def ttft(client: httpx.AsyncClient, url: str, max_tokens: int, timeout: float) -> float | None:
    """Seconds from sending one interactive streaming completion to its first token (None on failure)."""
    body = {"model": SERVED, "prompt": "Hello, how are you today?", "max_tokens": max_tokens, "stream": True}
    headers = {"Authorization": f"Bearer {KEYS['interactive']}"}
    started = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                return None
            first: float | None = None
            async for line in response.aiter_lines():
                if first is None and line.startswith("data:") and '"text"' in line:
                    first = time.perf_counter() - started
            return first
    except httpx.HTTPError:
        return None


async def interactive_run(url: str, count: int, gap: float, max_tokens: int, timeout: float) -> list[float | None]:
    """`count` interactive requests, one every `gap` seconds (open loop), each measured on its own."""
    async with httpx.AsyncClient() as client:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.ensure_future(ttft(client, url, max_tokens, timeout)))
            await asyncio.sleep(gap)
        return list(await asyncio.gather(*tasks))


async def bulk_worker(client: httpx.AsyncClient, url: str, max_tokens: int, stop_at: list[float], done: list[int]) -> None:
    """Keep one long bulk generation in flight until told to stop; count completed tokens."""
    body = {"model": SERVED, "prompt": "Write a long story about the sea.", "max_tokens": max_tokens, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {KEYS['bulk']}"}
    while time.monotonic() < stop_at[0]:
        try:
            response = await client.post(url, json=body, headers=headers, timeout=300)
        except httpx.HTTPError:
            await asyncio.sleep(0.2)
            continue
        if response.status_code == 200:
            done[0] += int(response.json()["usage"]["completion_tokens"])
        else:
            await asyncio.sleep(0.5)  # refused (429): back off a little, like a client honouring Retry-After


async def flood_run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """interactive requests while `args.flood` bulk generations are kept in flight."""
    stop_at = [time.monotonic() + 3600.0]
    done = [0]
    limits = httpx.Limits(max_connections=args.flood + 8, max_keepalive_connections=args.flood + 8)
    async with httpx.AsyncClient(limits=limits) as client:
        workers = [asyncio.ensure_future(bulk_worker(client, url, args.bulk_max_tokens, stop_at, done))
                   for _ in range(args.flood)]
        await asyncio.sleep(args.ramp)
        tokens0, t0 = done[0], time.monotonic()
        samples = await interactive_run(url, args.interactive, args.gap, args.interactive_max_tokens, args.timeout)
        elapsed = time.monotonic() - t0
        bulk_tokens = done[0] - tokens0
        stop_at[0] = 0.0
        for worker in workers:
            worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*workers, return_exceptions=True)
    return {"ttft": samples, "bulk_tokens_per_s": bulk_tokens / elapsed if elapsed else 0.0}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) in milliseconds."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def summarize(samples: list[float | None]) -> dict[str, float]:
    """p50/p99 of the successful samples and how many failed."""
    ok = [s for s in samples if s is not None]
    return {"p50_ms": pct(ok, 0.5) if ok else float("nan"), "p99_ms": pct(ok, 0.99) if ok else float("nan"),
            "failed": float(len(samples) - len(ok))}


def main() -> int:
    """Start both runtimes, measure every round, print the table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=64, help="bulk generations kept in flight")
    parser.add_argument("--bulk-max-tokens", type=int, default=128)
    parser.add_argument("--interactive", type=int, default=20, help="interactive requests per measurement")
    parser.add_argument("--interactive-max-tokens", type=int, default=8)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between interactive requests")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds of flood before measuring")
    parser.add_argument("--max-in-flight", type=int, default=32)
    parser.add_argument("--max-num-seqs", type=int, default=0,
                        help="vLLM batch; default: what the runtime derives (priority: --max-in-flight plus headroom)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "priority.json")
    args = parser.parse_args()

    from inferkube.runtime.tinymodel import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="priority-bench-"))
    model_dir = build_tiny_model(work / "tiny-model")
    tenants = tenants_file(work)
    procs, urls = {}, {}
    try:
        for mode in MODES:
            port = free_port()
            print(f"== starting the {mode} runtime (log {work / (mode + '.log')})", flush=True)
            procs[mode] = start(server_command(model_dir, port, tenants, mode, args), port, "/ready", work / f"{mode}.log")
            urls[mode] = f"http://127.0.0.1:{port}/v1/completions"
        raw: dict[str, dict[str, list[Any]]] = {m: {"alone": [], "flood": [], "bulk": []} for m in MODES}
        for round_no in range(args.rounds):
            order = MODES if round_no % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                print(f"== round {round_no + 1}: {mode}", flush=True)
                raw[mode]["alone"] += asyncio.run(interactive_run(urls[mode], args.interactive, args.gap,
                                                                  args.interactive_max_tokens, args.timeout))
                flood = asyncio.run(flood_run(urls[mode], args))
                raw[mode]["flood"] += flood["ttft"]
                raw[mode]["bulk"].append(flood["bulk_tokens_per_s"])
    finally:
        for proc in procs.values():
            stop(proc)
    summary = {m: {"alone": summarize(raw[m]["alone"]), "flood": summarize(raw[m]["flood"]),
                   "bulk_tokens_per_s": statistics.median(raw[m]["bulk"])} for m in MODES}
    print(f"\n{'interactive TTFT (ms)':<34}{'p50':>10}{'p99':>10}{'failed':>8}")
    for mode in MODES:
        for phase in ("alone", "flood"):
            s = summary[mode][phase]
            print(f"{mode + ' / ' + phase:<34}{s['p50_ms']:>10.1f}{s['p99_ms']:>10.1f}{int(s['failed']):>8}")
    for mode in MODES:
        print(f"bulk completed tokens/s under flood ({mode}): {summary[mode]['bulk_tokens_per_s']:.0f}")
    ratio = summary["priority"]["flood"]["p50_ms"] / summary["priority"]["alone"]["p50_ms"]
    print(f"priority: flood p50 / alone p50 = {ratio:.2f} (goal <= 1.5)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                       "raw": raw}, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
