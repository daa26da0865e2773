"""Side by side: vLLM's own OpenAI server vs the inferkube runtime, same model, engine settings and load.

    python benchmarks/runtime_vs_vllm.py                      # concurrency 32, 128, 256; 3 alternating pairs each
    python benchmarks/runtime_vs_vllm.py --concurrency 128 --pairs 5

Builds the tiny model and starts both servers at once (`python -m vllm.entrypoints.openai.api_server`
and `inferkube-runtime serve` with auth on, in-memory rate limits on, metrics on); an idle server costs
about 1 % of a core. Then, per concurrency, runs alternating pairs (vLLM first, then ours; the next pair
the other way round) with vLLM's own benchmark client (`vllm.benchmarks.serve`), 64 tokens in / 64 out.
Reports per concurrency the median of the in-pair ratios (ours / vLLM) of output tok/s, TTFT p50/p99,
TPOT p50, serving-layer CPU per output token (CPU time of the HTTP process, not the engine core) and,
for reading those, the engine processes' CPU per output token.
Loopback only; writes JSON beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

SERVED = "tiny"
KEY = "sk-bench-0123456789"
SERVERS = ("vllm", "inferkube")
# (key in the result, column title, higher is better)
METRICS = [("output_throughput", "output tok/s"), ("median_ttft_ms", "TTFT p50 ms"),
           ("p99_ttft_ms", "TTFT p99 ms"), ("median_tpot_ms", "TPOT p50 ms"),
           ("api_cpu_us_per_token", "API CPU us/tok"), ("engine_cpu_us_per_token", "engine CPU us/tok")]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], port: int, ready_path: str, log: Path, timeout: float = 600) -> subprocess.Popen:
    """Start a server subprocess and wait until `ready_path` answers 200."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout}s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server by PID and wait until its engine processes are gone too (so none still holds a
    core when the next server is measured)."""
    if proc.poll() is None:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT if "vllm.entrypoints" in " ".join(proc.args) else signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        _, alive = psutil.wait_procs(children, timeout=60)
        for child in alive:
            child.kill()
        time.sleep(2)  # let the machine settle before the next measurement


def run_client(port: int, model_dir: Path, args: argparse.Namespace, concurrency: int, label: str) -> dict:
    """Drive one server with vLLM's own benchmark client; return its result dict."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    prompts = args.num_prompts or max(300, 4 * concurrency)
    bench_args = parser.parse_args([
        "--backend", "openai", "--host", "127.0.0.1", "--port", str(port), "--endpoint", "/v1/completions",
        "--model", SERVED, "--tokenizer", str(model_dir), "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
        "--num-prompts", str(prompts), "--max-concurrency", str(concurrency),
        "--ignore-eos", "--seed", "0", "--disable-tqdm", "--num-warmups", "8", "--label", label,
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
    ])
    os.environ["OPENAI_API_KEY"] = KEY  # sent to both servers; only ours checks it
    return main(bench_args)


def measure(proc: subprocess.Popen, port: int, model_dir: Path, args: argparse.Namespace, concurrency: int,
            name: str) -> dict[str, float]:
    """One benchmark run against a running server, with the HTTP process's CPU per output token."""
    api = psutil.Process(proc.pid)
    engine = api.children(recursive=True)  # the engine core (and its worker) processes

    def engine_cpu() -> float:
        total = 0.0
        for child in engine:
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return total

    before, engine_before = sum(api.cpu_times()[:2]), engine_cpu()
    result = run_client(port, model_dir, args, concurrency, name)
    cpu = sum(api.cpu_times()[:2]) - before  # includes the 8 warm-ups: the same for both servers
    tokens = max(1, int(result["total_output_tokens"]))
    out = {key: float(result[key]) for key, _ in METRICS if key in result}
    out["api_cpu_us_per_token"] = 1e6 * cpu / tokens
    out["engine_cpu_us_per_token"] = 1e6 * (engine_cpu() - engine_before) / tokens
    return out


def tenants_file(directory: Path) -> Path:
    """A generous tenant: limits are on and checked on every request, but never bind."""
    path = directory / "tenants.yaml"
    path.write_text(f"tenants:\n  - name: bench\n    key: {KEY}\n    requestsPerMinute: 1000000\n"
                    "    tokensPerMinute: 1000000000\n")
    return path


def server_commands(model_dir: Path, port: int, work: Path, engine_args: list[str]) -> dict[str, tuple]:
    """The two servers, identical engine settings."""
    common = ["--model", str(model_dir), "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port)]
    vllm_cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *common, *engine_args]
    ours_cmd = [sys.executable, "-m", "inferkube.runtime.cli", "serve", *common,
                "--tenants-file", str(tenants_file(work)), "--rate-limit-backend", "memory",
                "--default-requests-per-minute", "1000000", "--max-in-flight", "256", "--max-queued", "256"]
    if engine_args:
        ours_cmd += ["--", *engine_args]
    return {"vllm": (vllm_cmd, "/health"), "inferkube": (ours_cmd, "/ready")}


def pair_ratios(pairs: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Median over pairs of the in-pair ratio ours / vLLM, per metric."""
    return {key: statistics.median(p["inferkube"][key] / p["vllm"][key] for p in pairs) for key, _ in METRICS}


def print_table(concurrency: int, pairs: list[dict[str, dict[str, float]]], ratios: dict[str, float]) -> None:
    """vLLM median | inferkube median | median in-pair ratio, one row per metric."""
    print(f"\nconcurrency {concurrency} ({len(pairs)} pairs)")
    print(f"{'metric':<16}{'vLLM server':>14}{'inferkube':>14}{'ratio':>10}{'pair ratios':>16}")
    for key, title in METRICS:
        a = statistics.median(p["vllm"][key] for p in pairs)
        b = statistics.median(p["inferkube"][key] for p in pairs)
        each = [p["inferkube"][key] / p["vllm"][key] for p in pairs]
        print(f"{title:<16}{a:>14.2f}{b:>14.2f}{ratios[key]:>10.3f}{min(each):>8.2f}-{max(each):.2f}")


def start_both(model_dir: Path, work: Path, engine_args: list[str]) -> dict[str, tuple[subprocess.Popen, int]]:
    """Start both servers (one after the other, each until ready) and leave them up."""
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name in SERVERS:
            port = free_port()
            cmd, ready = server_commands(model_dir, port, work, engine_args)[name]
            log = work / f"{name}.log"
            print(f"== starting {name} (log {log})", flush=True)
            running[name] = (start(cmd, port, ready, log), port)
    except BaseException:
        for proc, _ in running.values():
            stop(proc)
        raise
    return running


def main() -> int:
    """Run the comparison and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="32,128,256", help="comma-separated list")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs per concurrency")
    parser.add_argument("--num-prompts", type=int, default=0, help="default: max(300, 4 x concurrency)")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    parser.add_argument("engine_args", nargs="*", help="extra vLLM engine arguments for both (after --)")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]

    from inferkube.runtime.tinymodel import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="runtime-vs-vllm-"))
    model_dir = build_tiny_model(work / "tiny-model")
    running = start_both(model_dir, work, args.engine_args)
    report: dict[str, object] = {"config": {k: str(v) for k, v in vars(args).items() if k != "output"}}
    try:
        for concurrency in concurrencies:
            pairs: list[dict[str, dict[str, float]]] = []
            for pair_no in range(args.pairs):
                order = SERVERS if pair_no % 2 == 0 else tuple(reversed(SERVERS))
                pair = {}
                for name in order:
                    proc, port = running[name]
                    print(f"== c={concurrency} pair {pair_no + 1}: {name}", flush=True)
                    pair[name] = measure(proc, port, model_dir, args, concurrency, name)
                    time.sleep(2)
                pairs.append(pair)
            ratios = pair_ratios(pairs)
            print_table(concurrency, pairs, ratios)
            report[str(concurrency)] = {"ratios": ratios, "pairs": pairs}
    finally:
        for proc, _ in running.values():
            stop(proc)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
