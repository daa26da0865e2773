"""Side by side: vLLM's own OpenAI server vs the inferkube runtime, same model, engine settings and load.

    python benchmarks/runtime_vs_vllm.py                      # concurrency 32, 128, 256; 3 alternating pairs each
    python benchmarks/runtime_vs_vllm.py --concurrency 128 --pairs 5
    python benchmarks/runtime_vs_vllm.py --together --pairs 5  # both loaded at once: 5 rounds each
    python benchmarks/runtime_vs_vllm.py --sequential 400 --concurrency ""  # one request at a time

Builds the tiny model and starts both servers at once (`python -m vllm.entrypoints.openai.api_server`
and `inferkube-runtime serve` with auth on, in-memory rate limits on, metrics on); an idle server costs
about 1 % of a core. Then, per concurrency, runs alternating pairs (vLLM first, then ours; the next pair
the other way round) with vLLM's own benchmark client (`vllm.benchmarks.serve`), 64 tokens in / 64 out.
Reports per concurrency the median of the in-pair ratios (ours / vLLM) of output tok/s, TTFT p50/p99,
TPOT p50, serving-layer CPU per output token (CPU time of the HTTP process, not the engine core) and,
for reading those, the engine processes' CPU per output token; with a distribution-free interval of that
median (order statistics; its coverage in the header: 5 pairs give min-max at 94 %) and the range of
single-pair ratios.

`--together`: this machine's speed drifts by tens of per cent within a minute (the same server's CPU per
token moved 77-112 us between consecutive runs), more than alternating pairs average out in an hour. In
each round both servers are loaded at the same moment, each by its own client process (vLLM's client
again), and measured over the window in which both clients keep their full concurrency: both see the
same machine, so its drift cancels in the ratio. They share the CPUs, so the absolute numbers are about
half of a server's alone; the ratios are what this mode is for.
`--sequential N` (first): N requests one at a time, alternating the servers request by request: what one
request costs in latency (TTFT, whole answer) without any queueing.
`--pin`: the API processes, vLLM's scheduler processes and the client off the CPUs vLLM binds its model
worker to (tried: on 2 cores it made the pairs noisier, not quieter).
Loopback only; writes JSON beside this file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
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


def start(cmd: list[str], port: int, ready_path: str, log: Path, cache: Path, timeout: float = 600) -> subprocess.Popen:
    """Start a server subprocess and wait until `ready_path` answers 200. Each server compiles its model into
    its own, new vLLM cache: the one started second would otherwise find the first one's compiled model, fail
    to load it (vLLM 0.32 on the CPU: "no attribute 'finalize_loading'") and compile it again on a path the
    other did not take."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "VLLM_CACHE_ROOT": str(cache)}
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


def thread_ids(pid: int) -> list[int]:
    """Every thread of a process (Linux: /proc/PID/task)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def engine_cpus(proc: subprocess.Popen) -> set[int]:
    """The CPUs vLLM bound its model worker's threads to (`VLLM_CPU_OMP_THREADS_BIND=auto` binds them and
    reserves the remaining CPUs for the scheduler and API processes)."""
    every = set(range(psutil.cpu_count()))
    bound: set[int] = set()
    for child in psutil.Process(proc.pid).children(recursive=True):
        for tid in thread_ids(child.pid):
            try:
                cpus = set(os.sched_getaffinity(tid))
            except OSError:
                continue
            if cpus != every:
                bound |= cpus
    return bound


def pin(procs: list[subprocess.Popen]) -> set[int]:
    """`--pin`: keep the API processes, the engines' scheduler processes and this client (every thread) off the
    CPUs of the model workers, on the CPUs vLLM reserves for them, so neither server's front end preempts the
    model step (on 2 cores the OS otherwise moves them around, which moved single-pair ratios by +-20 %)."""
    every = set(range(psutil.cpu_count()))
    worker: set[int] = set()
    for proc in procs:
        worker |= engine_cpus(proc)
    front = every - worker
    if not worker or not front:
        raise RuntimeError(f"--pin: cannot tell the workers' CPUs ({sorted(worker)}) from the rest")
    pids = [os.getpid()]
    for proc in procs:
        pids += [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in pids:
        for tid in thread_ids(pid):
            try:
                if not set(os.sched_getaffinity(tid)) <= worker:  # a model worker thread stays where vLLM put it
                    os.sched_setaffinity(tid, front)
            except OSError:
                pass
    return front


# `vllm bench serve` without vLLM's CLI entry point (which looks up the `vllm` distribution; this one is vllm-cpu).
CLIENT_MAIN = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
               "from vllm.utils.argparse_utils import FlexibleArgumentParser; p = FlexibleArgumentParser(); "
               "add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


def order(i: int) -> tuple[str, ...]:
    """The servers in the order of pair `i`: vLLM first in even pairs, ours first in odd ones."""
    return SERVERS if i % 2 == 0 else tuple(reversed(SERVERS))


def client_argv(port: int, model_dir: Path, args: argparse.Namespace, concurrency: int, label: str) -> list[str]:
    """vLLM's benchmark client arguments for one run (`vllm bench serve`)."""
    prompts = args.num_prompts or (24 * concurrency if args.together else max(300, 4 * concurrency))
    return [
        "--backend", "openai", "--host", "127.0.0.1", "--port", str(port), "--endpoint", "/v1/completions",
        "--model", SERVED, "--tokenizer", str(model_dir), "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
        "--num-prompts", str(prompts), "--max-concurrency", str(concurrency),
        "--ignore-eos", "--seed", "0", "--disable-tqdm", "--num-warmups", "8", "--label", label,
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
    ]


def run_client(port: int, model_dir: Path, args: argparse.Namespace, concurrency: int, label: str) -> dict:
    """Drive one server with vLLM's own benchmark client (in this process); return its result dict."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    os.environ["OPENAI_API_KEY"] = KEY  # sent to both servers; only ours checks it
    return main(parser.parse_args(client_argv(port, model_dir, args, concurrency, label)))


def process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a server's API process and of its engine processes together."""
    api = psutil.Process(pid)
    engine = 0.0
    for child in api.children(recursive=True):
        try:
            engine += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return sum(api.cpu_times()[:2]), engine


def measure(proc: subprocess.Popen, port: int, model_dir: Path, args: argparse.Namespace, concurrency: int,
            name: str) -> dict[str, float]:
    """One benchmark run against a running server, with the HTTP process's CPU per output token."""
    api_before, engine_before = process_cpu(proc.pid)
    result = run_client(port, model_dir, args, concurrency, name)
    api_after, engine_after = process_cpu(proc.pid)  # includes the 8 warm-ups: the same for both servers
    tokens = max(1, int(result["total_output_tokens"]))
    out = {key: float(result[key]) for key, _ in METRICS if key in result}
    out["api_cpu_us_per_token"] = 1e6 * (api_after - api_before) / tokens
    out["engine_cpu_us_per_token"] = 1e6 * (engine_after - engine_before) / tokens
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


def at(samples: list[tuple[float, float, float]], when: float) -> tuple[float, float]:
    """(API CPU, engine CPU) at time `when`, interpolated between the poller's samples."""
    for (t0, a0, e0), (t1, a1, e1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            f = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
            return a0 + f * (a1 - a0), e0 + f * (e1 - e0)
    raise ValueError("time outside the sampled range")


def token_times(result: dict) -> list[float]:
    """When each output token reached the client (monotonic clock): first chunk at start + TTFT, then the
    inter-chunk gaps; a chunk that carries several tokens spreads them over its arrival."""
    times: list[float] = []
    for start, ttft, itls, n in zip(result["start_times"], result["ttfts"], result["itls"],
                                    result["output_lens"], strict=True):
        if not n or not ttft:  # a failed request: no tokens (vLLM's client records ttft 0, output_lens 0)
            continue
        arrivals = [start + ttft]
        for gap in itls:
            arrivals.append(arrivals[-1] + gap)
        times += [arrivals[k * len(arrivals) // n] for k in range(n)]
    return times


def common_window(results: list[dict]) -> tuple[float, float]:
    """The window in which every client keeps its full concurrency: from the later client's first answered
    request (from then on each answer is replaced at once: the opening burst and its queueing stay out) to
    the earlier client's last request (from then on its concurrency falls). Failed requests do not count."""
    def answered(r: dict) -> list[int]:
        return [i for i, n in enumerate(r["output_lens"]) if n]

    w0 = max(min(r["start_times"][i] + r["latencies"][i] for i in answered(r)) for r in results)
    w1 = min(max(r["start_times"][i] for i in answered(r)) for r in results)
    return w0, w1


def window_metrics(result: dict, samples: list[tuple[float, float, float]], w0: float, w1: float) -> dict[str, float]:
    """One server's numbers over the window [w0, w1] in which both clients kept their full concurrency:
    tokens that arrived in it; TTFT and TPOT of the requests that started and ended in it."""
    tokens = sum(1 for t in token_times(result) if w0 <= t <= w1)
    (a0, e0), (a1, e1) = at(samples, w0), at(samples, w1)
    inside = [i for i, (start, latency) in enumerate(zip(result["start_times"], result["latencies"], strict=True))
              if w0 <= start and start + latency <= w1 and result["output_lens"][i]]
    ttfts = sorted(1e3 * result["ttfts"][i] for i in inside)
    tpots = [1e3 * (result["latencies"][i] - result["ttfts"][i]) / (result["output_lens"][i] - 1)
             for i in inside if result["output_lens"][i] > 1]
    return {"output_throughput": tokens / (w1 - w0), "median_ttft_ms": statistics.median(ttfts),
            "p99_ttft_ms": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
            "median_tpot_ms": statistics.median(tpots),
            "api_cpu_us_per_token": 1e6 * (a1 - a0) / max(1, tokens),
            "engine_cpu_us_per_token": 1e6 * (e1 - e0) / max(1, tokens)}


def together_round(running: dict[str, tuple[subprocess.Popen, int]], model_dir: Path, args: argparse.Namespace,
                   concurrency: int, work: Path) -> dict[str, dict[str, float]]:
    """`--together`: both servers loaded at once, each by its own client process, so both see the same
    machine at the same moment (this machine's speed drifts by tens of per cent within a minute, which no
    number of alternating pairs averages out cheaply). Measured over the window in which both clients keep
    their full concurrency (after both ramped up, before either sends its last request)."""
    clients: dict[str, subprocess.Popen] = {}
    files: dict[str, Path] = {}
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    for name in SERVERS:
        files[name] = work / f"together-{name}.json"
        files[name].unlink(missing_ok=True)
        _, port = running[name]
        clients[name] = subprocess.Popen(
            [sys.executable, "-c", CLIENT_MAIN, *client_argv(port, model_dir, args, concurrency, name),
             "--save-result", "--save-detailed", "--result-dir", str(work), "--result-filename", files[name].name],
            stdout=(work / f"together-{name}.log").open("wb"), stderr=subprocess.STDOUT, env=env)
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in SERVERS}
    while any(c.poll() is None for c in clients.values()):
        now = time.perf_counter()
        for name in SERVERS:
            samples[name].append((now, *process_cpu(running[name][0].pid)))
        time.sleep(0.1)
    for name, client in clients.items():
        if client.returncode != 0:
            raise RuntimeError(f"the client for {name} exited {client.returncode}; see {work}/together-{name}.log")
    results = {name: json.loads(files[name].read_text()) for name in SERVERS}
    for name, result in results.items():
        if result["failed"]:
            raise RuntimeError(f"{name} failed {result['failed']} requests; see {work}/together-{name}.log")
    w0, w1 = common_window(list(results.values()))
    if w1 - w0 < 5:
        raise RuntimeError(f"a common window of {w1 - w0:.1f}s is too short: raise --num-prompts")
    print(f"   window {w1 - w0:.1f}s", flush=True)
    return {name: window_metrics(results[name], samples[name], w0, w1) for name in SERVERS}


def pair_ratios(pairs: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Median over pairs of the in-pair ratio ours / vLLM, per metric."""
    return {key: statistics.median(p["inferkube"][key] / p["vllm"][key] for p in pairs) for key, _ in METRICS}


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """A distribution-free interval of the median from order statistics: the widest-inward [x(k), x(n+1-k)]
    that still covers the median with >= 95 % (binomial), or min-max when there are too few values; and its
    coverage (5 values: min-max, 93.75 %; 11 values: x(2)-x(10), 98.8 %)."""
    xs, n = sorted(values), len(values)

    def below(k: int) -> float:  # P(Binomial(n, 1/2) < k)
        return sum(math.comb(n, i) for i in range(k)) / 2 ** n

    k = 1
    while k + 1 <= n / 2 and below(k + 1) <= 0.025:
        k += 1
    return xs[k - 1], xs[n - k], 1 - 2 * below(k)


def print_table(concurrency: int, pairs: list[dict[str, dict[str, float]]], ratios: dict[str, float],
                intervals: dict[str, tuple[float, float]], unit: str = "pairs") -> None:
    """vLLM median | inferkube median | median in-pair ratio, its interval and the single-pair range."""
    print(f"\nconcurrency {concurrency} ({len(pairs)} {unit})")
    coverage = median_interval([1.0] * len(pairs))[2]
    print(f"{'metric':<18}{'vLLM server':>12}{'inferkube':>12}{'ratio':>8}{f'{coverage:.0%} interval':>15}"
          f"{'pair range':>13}")
    for key, title in METRICS:
        a = statistics.median(p["vllm"][key] for p in pairs)
        b = statistics.median(p["inferkube"][key] for p in pairs)
        each = [p["inferkube"][key] / p["vllm"][key] for p in pairs]
        low, high = intervals[key]
        print(f"{title:<18}{a:>12.2f}{b:>12.2f}{ratios[key]:>8.3f}{low:>9.3f}-{high:.3f}"
              f"{min(each):>7.2f}-{max(each):.2f}")


def start_both(model_dir: Path, work: Path, engine_args: list[str],
               pinned: bool = False) -> dict[str, tuple[subprocess.Popen, int]]:
    """Start both servers (one after the other, each until ready) and leave them up."""
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name in SERVERS:
            port = free_port()
            cmd, ready = server_commands(model_dir, port, work, engine_args)[name]
            log = work / f"{name}.log"
            print(f"== starting {name} (log {log})", flush=True)
            running[name] = (start(cmd, port, ready, log, work / f"{name}-vllm-cache"), port)
        if pinned:  # after both started: a server started from a pinned process would bind its worker elsewhere
            front = pin([proc for proc, _ in running.values()])
            print(f"== API processes, schedulers and client on CPUs {sorted(front)}", flush=True)
    except BaseException:
        for proc, _ in running.values():
            stop(proc)
        raise
    return running


def measure_concurrency(running: dict[str, tuple[subprocess.Popen, int]], model_dir: Path, args: argparse.Namespace,
                        concurrency: int, work: Path) -> list[dict[str, dict[str, float]]]:
    """`--pairs` alternating pairs (vLLM then ours, the next pair the other way round), or as many rounds
    with both loaded at once (`--together`)."""
    pairs: list[dict[str, dict[str, float]]] = []
    for pair_no in range(args.pairs):
        if args.together:
            print(f"== c={concurrency} round {pair_no + 1}: both at once", flush=True)
            pairs.append(together_round(running, model_dir, args, concurrency, work))
            time.sleep(2)
            continue
        pair = {}
        for name in order(pair_no):
            proc, port = running[name]
            print(f"== c={concurrency} pair {pair_no + 1}: {name}", flush=True)
            pair[name] = measure(proc, port, model_dir, args, concurrency, name)
            time.sleep(2)
        pairs.append(pair)
    return pairs


def sequential_probe(running: dict[str, tuple[subprocess.Popen, int]], requests: int, input_len: int) -> dict:
    """`--sequential N`: one streamed request at a time, alternating the servers request by request (the
    machine's drift cancels within each pair), 8 tokens out: each server's TTFT and latency medians, the mean
    in-pair difference (ours - vLLM's) and its median per order. What one request costs, without queueing."""
    body = {"model": SERVED, "prompt": " ".join(f"w{i}" for i in range(input_len // 2)), "max_tokens": 8,
            "stream": True, "ignore_eos": True}
    times: dict[str, dict[str, list[float]]] = {name: {"ttft_ms": [], "latency_ms": []} for name in SERVERS}
    clients = {name: httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"})
               for name, (_, port) in running.items()}
    warmup = 20
    for i in range(warmup + requests):
        for name in order(i):
            start, first = time.perf_counter(), 0.0
            with clients[name].stream("POST", "/v1/completions", json=body) as response:
                response.raise_for_status()
                for chunk in response.iter_raw():
                    first = first or (time.perf_counter() if chunk else 0.0)
            if i >= warmup:
                times[name]["ttft_ms"].append(1e3 * (first - start))
                times[name]["latency_ms"].append(1e3 * (time.perf_counter() - start))
    for client in clients.values():
        client.close()
    report: dict[str, dict[str, float]] = {}
    print(f"\nsequential: {requests} requests each, one at a time, alternating")
    for key in ("ttft_ms", "latency_ms"):
        ours, theirs = times["inferkube"][key], times["vllm"][key]
        diffs = [b - a for a, b in zip(theirs, ours, strict=True)]
        # Per order too: the one sent second in a pair may differ from the first; even and odd pairs swap it.
        report[key] = {"vllm": statistics.median(theirs), "inferkube": statistics.median(ours),
                       "mean_difference": statistics.fmean(diffs),
                       "median_difference_vllm_first": statistics.median(diffs[0::2]),
                       "median_difference_ours_first": statistics.median(diffs[1::2])}
        r = report[key]
        print(f"{key:<12} p50 vLLM {r['vllm']:7.2f}  inferkube {r['inferkube']:7.2f}  mean in-pair difference "
              f"{r['mean_difference']:+.2f} (median: vLLM first {r['median_difference_vllm_first']:+.2f}, "
              f"ours first {r['median_difference_ours_first']:+.2f})")
    return report


def main() -> int:
    """Run the comparison and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="32,128,256", help="comma-separated list")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs per concurrency")
    parser.add_argument("--num-prompts", type=int, default=0,
                        help="per client; default max(300, 4 x concurrency), with --together 24 x concurrency")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--together", action="store_true",
                        help="load both servers at once (one client process each) instead of alternating pairs")
    parser.add_argument("--sequential", type=int, default=0, metavar="N",
                        help="first: N requests one at a time, alternating servers request by request")
    parser.add_argument("--pin", action="store_true",
                        help="API processes, vLLM's scheduler processes and the client off the model worker's CPUs")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    parser.add_argument("engine_args", nargs="*", help="extra vLLM engine arguments for both (after --)")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]

    from inferkube.runtime.tinymodel import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="runtime-vs-vllm-"))
    model_dir = build_tiny_model(work / "tiny-model")
    running = start_both(model_dir, work, args.engine_args, args.pin)
    report: dict[str, object] = {"config": {k: str(v) for k, v in vars(args).items() if k != "output"}}
    try:
        if args.sequential:
            report["sequential"] = sequential_probe(running, args.sequential, args.input_len)
        for concurrency in concurrencies:
            pairs = measure_concurrency(running, model_dir, args, concurrency, work)
            ratios = pair_ratios(pairs)
            intervals = {key: median_interval([p["inferkube"][key] / p["vllm"][key] for p in pairs])[:2]
                         for key, _ in METRICS}
            print_table(concurrency, pairs, ratios, intervals, "rounds, both at once" if args.together else "pairs")
            report[str(concurrency)] = {"ratios": ratios, "intervals": intervals, "pairs": pairs}
    finally:
        for proc, _ in running.values():
            stop(proc)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
