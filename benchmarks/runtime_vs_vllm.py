"""Side by side: vLLM's own OpenAI server vs the inferkube runtime, same model, engine settings and load.

    python benchmarks/runtime_vs_vllm.py            # 200 prompts, 64 in / 64 out, concurrency 32

Builds the tiny model, starts `python -m vllm.entrypoints.openai.api_server`, drives it with vLLM's own
benchmark client (`vllm.benchmarks.serve`), stops it, then does the same with `inferkube-runtime serve`
(auth on with a generous tenant, in-memory rate limits on, metrics on). Prints a table, writes JSON.
Loopback only. With --rounds N the two servers alternate N times and the medians are reported.
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
METRICS = [("output_throughput", "output tok/s"), ("median_ttft_ms", "TTFT p50 ms"),
           ("p99_ttft_ms", "TTFT p99 ms"), ("median_tpot_ms", "TPOT p50 ms"), ("p99_tpot_ms", "TPOT p99 ms"),
           ("api_cpu_s", "API proc CPU s")]


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


def run_client(port: int, model_dir: Path, args: argparse.Namespace, label: str) -> dict:
    """Drive one server with vLLM's own benchmark client; return its result dict."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    bench_args = parser.parse_args([
        "--backend", "openai", "--host", "127.0.0.1", "--port", str(port), "--endpoint", "/v1/completions",
        "--model", SERVED, "--tokenizer", str(model_dir), "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
        "--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.concurrency),
        "--ignore-eos", "--seed", "0", "--disable-tqdm", "--num-warmups", "8", "--label", label,
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
    ])
    os.environ["OPENAI_API_KEY"] = KEY  # sent to both servers; only ours checks it
    return main(bench_args)


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


def summarize(results: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Median over rounds of each reported metric, per server."""
    return {name: {key: statistics.median(r[key] for r in runs) for key, _ in METRICS}
            for name, runs in results.items()}


def print_table(summary: dict[str, dict[str, float]]) -> None:
    """vLLM | inferkube | ratio, one row per metric."""
    print(f"\n{'metric':<16}{'vLLM server':>14}{'inferkube':>14}{'ratio':>10}")
    for key, title in METRICS:
        a, b = summary["vllm"][key], summary["inferkube"][key]
        print(f"{title:<16}{a:>14.2f}{b:>14.2f}{(b / a if a else float('nan')):>10.3f}")


def main() -> int:
    """Run the comparison and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    parser.add_argument("engine_args", nargs="*", help="extra vLLM engine arguments for both (after --)")
    args = parser.parse_args()

    from inferkube.runtime.tinymodel import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="runtime-vs-vllm-"))
    model_dir = build_tiny_model(work / "tiny-model")
    results: dict[str, list[dict]] = {"vllm": [], "inferkube": []}
    for round_no in range(args.rounds):
        for name in ("vllm", "inferkube"):
            port = free_port()
            cmd, ready = server_commands(model_dir, port, work, args.engine_args)[name]
            log = work / f"{name}-{round_no}.log"
            print(f"== round {round_no + 1}: starting {name} (log {log})", flush=True)
            proc = start(cmd, port, ready, log)
            try:
                api = psutil.Process(proc.pid)
                before = sum(api.cpu_times()[:2])
                result = run_client(port, model_dir, args, name)
                # CPU the HTTP/API process (not the engine core) spent on this run, incl. the warm-ups.
                result["api_cpu_s"] = sum(api.cpu_times()[:2]) - before
                results[name].append(result)
            finally:
                stop(proc)
    summary = summarize(results)
    print_table(summary)
    ratios = {"throughput": summary["inferkube"]["output_throughput"] / summary["vllm"]["output_throughput"],
              "ttft_p50": summary["inferkube"]["median_ttft_ms"] / summary["vllm"]["median_ttft_ms"],
              "tpot_p50": summary["inferkube"]["median_tpot_ms"] / summary["vllm"]["median_tpot_ms"]}
    report = {"config": {k: v for k, v in vars(args).items() if k != "output"}, "summary": summary,
              "ratios": ratios, "rounds": {n: [{k: r[k] for k, _ in METRICS} for r in runs]
                                           for n, runs in results.items()}}
    args.output.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nratios: {json.dumps({k: round(v, 3) for k, v in ratios.items()})}\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
