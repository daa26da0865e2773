"""Start-up of a "second replica" with the model cache warm vs cold, on the tiny model.

Cold: the downloader fetches the model from a local stand-in Hub (127.0.0.1) into an empty cache.
Warm: the cache already holds a complete copy (manifest + sizes match), so nothing is fetched.
Each replica start runs the real command `inferkube-runtime download ...` as a subprocess; with
`--serve` it then also starts `inferkube-runtime serve` (real vLLM on the CPU) until /ready answers.

    .venv/bin/python benchmarks/cache_warm_vs_cold.py --rounds 5 [--serve]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inferkube.runtime.tinymodel import build_tiny_model, default_tiny_model_dir  # noqa: E402
from tests.unit.runtime.test_download_fakes import FakeHub, HubRepo, read_tree  # noqa: E402

REPO = "acme/tiny-llama"


def run_downloader(hub: FakeHub, dest: Path, work: Path) -> tuple[float, dict, int, int]:
    """Run the downloader once; return (seconds, final event, bytes the server sent, requests it saw)."""
    sent_before, requests_before = hub.body_bytes(), len(hub.requests)
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    env.pop("HF_TOKEN", None)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "inferkube.runtime.cli", "download", "--source", f"hf://{REPO}",
         "--revision", "main", "--dest", str(dest), "--termination-log", str(work / "term"),
         "--progress-interval", "1"],
        env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"download failed: {proc.stdout}\n{proc.stderr}")
    event = json.loads(proc.stdout.strip().splitlines()[-1])
    return seconds, event, hub.body_bytes() - sent_before, len(hub.requests) - requests_before


def time_to_ready(model_dir: Path, log_path: Path) -> float:
    """Start the real runtime on model_dir (hub offline) and return seconds until /ready is 200."""
    from tests.integration.runtime.conftest import start_runtime_server

    start = time.perf_counter()
    server = start_runtime_server(model_dir, ["--drain-timeout", "5"], log_path=log_path,
                                  env={"HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    server.stop()
    return seconds


def main() -> int:
    """Measure cold and warm replica start-ups and print a summary (JSON + markdown rows)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="cold+warm pairs to measure")
    parser.add_argument("--serve", action="store_true", help="also time engine start to /ready (slow)")
    args = parser.parse_args()

    files = read_tree(build_tiny_model(default_tiny_model_dir()))
    hub = FakeHub({REPO: HubRepo(files=files)}).start()
    work = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    results: dict[str, list] = {"cold": [], "warm": []}
    try:
        for _ in range(args.rounds):
            cache = work / "models"
            shutil.rmtree(cache, ignore_errors=True)
            dest = cache / "tiny"
            for kind in ("cold", "warm"):  # replica 1 fills the cache, replica 2 finds it
                seconds, event, sent, requests = run_downloader(hub, dest, work)
                results[kind].append({"seconds": seconds, "bytesDownloaded": event["bytesDownloaded"],
                                      "serverBodyBytes": sent, "serverRequests": requests})
        ready = {}
        if args.serve:
            ready["cold"] = results["cold"][-1]["seconds"] + time_to_ready(dest, work / "cold.log")
            ready["warm"] = results["warm"][-1]["seconds"] + time_to_ready(dest, work / "warm.log")
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = {"modelBytes": sum(map(len, files.values())), "modelFiles": len(files), "rounds": args.rounds}
    for kind, rows in results.items():
        summary[kind] = {
            "downloadSecondsMedian": round(statistics.median(r["seconds"] for r in rows), 3),
            "downloadSecondsMax": round(max(r["seconds"] for r in rows), 3),
            "bytesDownloadedPerReplica": rows[-1]["bytesDownloaded"],
            "serverBodyBytesPerReplica": rows[-1]["serverBodyBytes"],
            "serverRequestsPerReplica": rows[-1]["serverRequests"],
        }
        if kind in ready:
            summary[kind]["startToReadySeconds"] = round(ready[kind], 1)
    assert all(r["serverBodyBytes"] == 0 and r["serverRequests"] == 0 for r in results["warm"]), results
    print(json.dumps(summary, indent=2))
    for kind in ("cold", "warm"):
        s = summary[kind]
        extra = f" | {s['startToReadySeconds']} s" if "startToReadySeconds" in s else ""
        print(f"| {kind} | {s['downloadSecondsMedian']} s | {s['bytesDownloadedPerReplica']} | "
              f"{s['serverRequestsPerReplica']}{extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
