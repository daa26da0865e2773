"""Operator reconcile benchmark: latency, API writes, idle writes and peak RSS for 1 and N InferenceServices.

Usage: ``.venv/bin/python benchmarks/operator_reconcile.py [--count 500] [--idle-seconds 60] [--quotas 10]``

With ``--quotas Q`` the emulator holds Q InferenceQuotas before the operator starts; service i is labelled
``team: t(i mod Q)`` and quota t(k) selects its team, so every service is decided by a quota (all fit).

Three processes per size: this driver, the Kubernetes API emulator (``tests.kube_emulator``, its own
process, started with ``multiprocessing`` so the driver can read its write counters over a pipe) and the
real operator (``inferkube-operator --liveness ''`` with ``KUBECONFIG`` pointing at the emulator), so the
operator's peak RSS (``VmHWM``) is its own. See docs/benchmarks.md, section "Operator reconcile".
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from inferkube.operator.settings import OperatorSettings  # noqa: E402  (after the sys.path line)

NS = "bench"
GROUP_VERSION = "serving.inferkube.dev/v1alpha1"
CHILDREN = ("Service", "PodDisruptionBudget", "Deployment")  # cache disabled, no ServiceMonitor, no autoscaling
POLL = 0.005  # seconds between convergence checks inside the emulator process
RESULTS = REPO / "benchmarks" / "results" / "operator_reconcile.json"


def service(name: str, quotas: int = 0) -> dict[str, Any]:
    """One InferenceService: no model cache (the Deployment is created at once), no ServiceMonitor, 1 replica;
    with quotas, labelled with the team whose quota selects it."""
    labels = {"team": f"t{sum(map(ord, name)) % quotas}"} if quotas else {}
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "model": {"source": f"hf://bench/model-{name}", "revision": "main"},
            "replicas": 1,
            "cache": {"enabled": False},
            "monitoring": {"serviceMonitor": False},
        },
    }


def quota(index: int) -> dict[str, Any]:
    """Team t(index)'s InferenceQuota: selects its team's services in the benchmark namespace, room for all."""
    return {"apiVersion": GROUP_VERSION, "kind": "InferenceQuota", "metadata": {"name": f"t{index}"},
            "spec": {"selector": {"namespaces": [NS], "serviceSelector": {"matchLabels": {"team": f"t{index}"}}},
                     "limits": {"gpus": 10000, "replicas": 10000}}}


# --------------------------------------------------------------------------- emulator process

_LABELS = {"app": "warmup"}
WARMUP = [  # one object of every kind the benchmark writes, created and deleted before the operator starts
    {**service("warmup")},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "warmup", "namespace": "default"},
     "spec": {"selector": _LABELS, "ports": [{"port": 80, "targetPort": 8000}]}},
    {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "warmup", "namespace": "default"},
     "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _LABELS}}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "warmup", "namespace": "default"},
     "spec": {"replicas": 1, "selector": {"matchLabels": _LABELS}, "template": {
         "metadata": {"labels": _LABELS}, "spec": {"containers": [{"name": "c", "image": "registry.local/x:1"}]}}}},
]


def _status_written(obj: dict[str, Any] | None) -> bool:
    """status.phase present and observedGeneration == generation."""
    if not obj:
        return False
    status = obj.get("status") or {}
    return bool(status.get("phase")) and status.get("observedGeneration") == obj["metadata"].get("generation")


def _ready(obj: dict[str, Any] | None) -> bool:
    """The Ready condition is True for the current generation."""
    status = (obj or {}).get("status") or {}
    return _status_written(obj) and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _user_writes(writes: list[Any]) -> list[Any]:
    """Mutating requests, Events excluded (kopf posts them on its own schedule)."""
    return [w for w in writes if "/events" not in w.path]


def _write_kind(verb: str, path: str) -> str:
    """"PATCH deployments" / "PATCH inferenceservices/status" from a request path."""
    parts = path.split("?")[0].strip("/").split("/")
    if parts[-1] in ("status", "scale"):
        return f"{verb} {parts[-3]}/{parts[-1]}"
    return f"{verb} {parts[-2] if verb != 'POST' else parts[-1]}"


def emulator_main(conn: Connection, quotas: int = 0) -> None:
    """Serve the emulator in this process and answer the driver's commands on `conn` until "stop"."""
    from inferkube.operator.crd import build_crd, build_quota_crd
    from tests.kube_emulator import KubeEmulator
    from tests.kube_emulator.store import ApiError

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us with "stop"
    kube = KubeEmulator(namespaces=("default", NS)).start()
    kube.create(build_crd())
    kube.create(build_quota_crd())
    res = {kind: kube.resource(kind) for kind in ("InferenceService", *CHILDREN)}
    for body in WARMUP:  # compile the emulator's per-kind schemas/CEL now, not during the first measurement
        kube.create(body)
        kube.delete(body["kind"], body["metadata"].get("namespace"), body["metadata"]["name"])
    for index in range(quotas):
        kube.create(quota(index))
    kubeconfig = kube.kubeconfig()
    conn.send({"kubeconfig": kubeconfig, "pid": os.getpid()})

    def lookup(kind: str, name: str) -> dict[str, Any] | None:
        try:
            return kube.store.get(res[kind], NS, name)  # runs on the emulator's loop (see kube._call)
        except ApiError:
            return None

    def converged(names: list[str], check: str) -> list[str]:
        """Names whose service passes `check` (and, for "converged", has every expected child)."""
        done = []
        for name in names:
            obj = lookup("InferenceService", name)
            if check == "ready":
                if _ready(obj):
                    done.append(name)
            elif _status_written(obj) and all(lookup(kind, name) is not None for kind in CHILDREN):
                done.append(name)
        return done

    def track(names: list[str], created: dict[str, float], check: str, timeout: float) -> dict[str, float]:
        """Poll (on the emulator loop) until every name passes `check`; seconds from its start to first seen.

        `created` fills up while another thread creates; only names already in it are checked.
        """
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < len(names) and time.monotonic() < deadline:
            pending = [n for n in list(created) if n not in seen]
            done = kube._call(lambda: converged(pending, check))  # noqa: B023 - evaluated at once
            now = time.monotonic()
            for name in done:
                seen[name] = now - created[name]
            time.sleep(POLL)
        return seen

    def start_all(names: list[str], action: Any) -> tuple[dict[str, float], threading.Thread]:
        """Run action(name) for every name in a thread, recording when each started."""
        started: dict[str, float] = {}

        def run() -> None:
            for name in names:
                started[name] = time.monotonic()
                action(name)

        thread = threading.Thread(target=run, name="bench-writer")
        thread.start()
        return started, thread

    while True:
        cmd, arg = conn.recv()
        if cmd == "stop":
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # handlers of watches cut by the stop
            kube.stop()
            conn.send("stopped")
            return
        if cmd == "operator_watching":
            log = kube.request_log
            conn.send(all(any(("watch=true" in p) and f"/{plural}" in p for _, p in log)
                          for plural in ("inferenceservices", "deployments", "services", "poddisruptionbudgets")))
        elif cmd == "reset":
            kube.reset_counters()
            conn.send(True)
        elif cmd == "writes":
            writes = _user_writes(kube.writes)
            conn.send({"total": len(writes), "by_kind": dict(Counter(_write_kind(w.verb, w.path) for w in writes)),
                       "events": len(kube.writes) - len(writes),
                       "requests": kube.requests,
                       "last_requests": kube.request_log[-min(kube.requests, 20):] if kube.requests else [],
                       "validation_errors": len(kube.validation_errors)})
        elif cmd == "create_one_at_a_time":
            names, timeout = arg
            latencies: dict[str, float] = {}
            for name in names:
                started = {name: time.monotonic()}
                kube.create(service(name, quotas))
                latencies.update(track([name], started, "converged", timeout))
                time.sleep(0.2)  # let the follow-up status write land before the next one
            conn.send({"latency": latencies})
        elif cmd in ("create_and_track", "deployments_available_and_track"):
            names, timeout = arg
            if cmd == "create_and_track":
                started, thread = start_all(names, lambda name: kube.create(service(name, quotas)))
            else:
                started, thread = start_all(names, lambda name: kube.mark_deployment_available(NS, name))
            seen = track(names, started, "converged" if cmd == "create_and_track" else "ready", timeout)
            thread.join(timeout=60)
            first = min(started.values())
            conn.send({"latency": seen, "burst_seconds": max(started.values()) - first,
                       "all_done_s": max(started[n] + seen[n] for n in seen) - first if seen else None})
        else:
            conn.send(ValueError(f"unknown command {cmd}"))


# --------------------------------------------------------------------------- driver


def _proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS in kB from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def _summary(latencies: dict[str, float], count: int) -> dict[str, Any]:
    values = list(latencies.values())
    if not values:
        return {"converged": 0, "of": count}
    return {"converged": len(values), "of": count,
            "p50_ms": round(_pct(values, 0.50) * 1000, 1), "p95_ms": round(_pct(values, 0.95) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1), "mean_ms": round(statistics.fmean(values) * 1000, 1)}


def ask(conn: Connection, cmd: str, arg: Any = None, timeout: float = 600) -> Any:
    """Send a command to the emulator process and wait (bounded) for its answer."""
    conn.send((cmd, arg))
    if not conn.poll(timeout):
        raise TimeoutError(f"emulator did not answer {cmd!r} in {timeout}s")
    answer = conn.recv()
    if isinstance(answer, Exception):
        raise answer
    return answer


def run_size(count: int, idle_seconds: float, converge_timeout: float, log_dir: Path, one_by_one: int = 20,
             profile: Path | None = None, quotas: int = 0) -> dict[str, Any]:
    """One fresh emulator + operator pair; create `count` services and measure."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    emulator = ctx.Process(target=emulator_main, args=(child, quotas), name="kube-emulator", daemon=True)
    emulator.start()
    operator: subprocess.Popen[bytes] | None = None
    log_path = log_dir / f"operator-{count}.log"
    try:
        if not parent.poll(60):
            raise TimeoutError("the emulator did not start")
        hello = parent.recv()
        env = {**os.environ, "KUBECONFIG": hello["kubeconfig"]}
        exe = Path(sys.executable).parent / "inferkube-operator"
        with open(log_path, "wb") as log:
            operator = subprocess.Popen([str(exe), "--liveness", ""], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not ask(parent, "operator_watching"):
            if operator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start watching; see {log_path}")
            time.sleep(0.1)
        # the operator holds reconciles for startupSettleSeconds after start (a one-time cost, not
        # part of any object's reconcile): measure after it
        time.sleep(0.5 + OperatorSettings().startup_settle_seconds)
        rss_idle_kb = _proc_status(operator.pid)["VmRSS"]
        cpu0, emu0 = _cpu_seconds(operator.pid), _cpu_seconds(hello["pid"])
        ask(parent, "reset")
        names = [f"svc-{i:04d}" for i in range(count)]
        spy = None
        if profile is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(operator.pid),
                                    "--rate", "200", "--format", {".json": "speedscope", ".txt": "raw"}.get(profile.suffix, "flamegraph"),
                                    "--output", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        created = ask(parent, "create_and_track", (names, converge_timeout), timeout=converge_timeout + 120)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        writes_converge = ask(parent, "writes")
        cpu_converge = _cpu_seconds(operator.pid) - cpu0
        emu_converge = _cpu_seconds(hello["pid"]) - emu0
        ask(parent, "reset")
        ready = ask(parent, "deployments_available_and_track", (names, converge_timeout),
                    timeout=converge_timeout + 120)
        writes_ready = ask(parent, "writes")
        time.sleep(2.0)  # let the last watch events settle before the idle window
        ask(parent, "reset")
        cpu1 = _cpu_seconds(operator.pid)
        time.sleep(idle_seconds)
        writes_idle = ask(parent, "writes")
        cpu_idle = _cpu_seconds(operator.pid) - cpu1
        extra = [f"one-{i:03d}" for i in range(one_by_one)]
        sequential = ask(parent, "create_one_at_a_time", (extra, 30.0), timeout=30.0 * len(extra) + 60)
        mem = _proc_status(operator.pid)
        latencies = created["latency"]
        return {
            "count": count,
            "quotas": quotas,
            "converge": {**_summary(latencies, count),
                         "all_converged_s": round(created["all_done_s"], 2) if len(latencies) == count else None,
                         "create_burst_s": round(created["burst_seconds"], 3)},
            "one_at_a_time": {**_summary(sequential["latency"], one_by_one), "with_existing": count},
            "writes_converge": writes_converge,
            "writes_per_service_converge": round(writes_converge["total"] / count, 2),
            "operator_cpu_s_converge": round(cpu_converge, 2),
            "emulator_cpu_s_converge": round(emu_converge, 2),
            "ready": {**_summary(ready["latency"], count),
                      "all_ready_s": round(ready["all_done_s"], 2) if len(ready["latency"]) == count else None,
                      "mark_burst_s": round(ready["burst_seconds"], 3)},
            "writes_ready": writes_ready,
            "idle_seconds": idle_seconds,
            "writes_idle": writes_idle,
            "operator_cpu_s_idle": round(cpu_idle, 2),
            "operator_rss_mb": {"before_create": round(rss_idle_kb / 1024, 1), "end": round(mem["VmRSS"] / 1024, 1),
                                "peak": round(mem["VmHWM"] / 1024, 1)},
            "operator_log": str(log_path),
        }
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait(timeout=5)
        if emulator.is_alive():
            try:
                ask(parent, "stop", timeout=15)
            except (TimeoutError, EOFError, BrokenPipeError):
                pass
            emulator.join(timeout=10)
            if emulator.is_alive():
                emulator.kill()
                emulator.join(timeout=5)


def print_table(results: list[dict[str, Any]]) -> None:
    """A human-readable summary of every size."""
    rows = [
        ("reconcile latency p50 (all N created at once)", lambda r: f"{r['converge'].get('p50_ms')} ms"),
        ("reconcile latency p95", lambda r: f"{r['converge'].get('p95_ms')} ms"),
        ("reconcile latency max", lambda r: f"{r['converge'].get('max_ms')} ms"),
        ("latency p50, then one at a time (N already converged)", lambda r: f"{r['one_at_a_time'].get('p50_ms')} ms"),
        ("latency p95, then one at a time", lambda r: f"{r['one_at_a_time'].get('p95_ms')} ms"),
        ("first create -> all N converged", lambda r: f"{r['converge']['all_converged_s']} s"),
        ("  of which creating them (emulator, test hook)", lambda r: f"{r['converge']['create_burst_s']} s"),
        ("API writes per service (create -> converged)", lambda r: str(r["writes_per_service_converge"])),
        ("API writes per service (Deployment Available -> Ready)",
         lambda r: str(round(r["writes_ready"]["total"] / r["count"], 2))),
        ("Deployment Available -> Ready p50", lambda r: f"{r['ready'].get('p50_ms')} ms"),
        ("writes during idle window", lambda r: f"{r['writes_idle']['total']} in {r['idle_seconds']:.0f} s"),
        ("operator CPU during idle window", lambda r: f"{r['operator_cpu_s_idle']} s"),
        ("operator CPU create -> converged", lambda r: f"{r['operator_cpu_s_converge']} s"),
        ("emulator CPU create -> converged", lambda r: f"{r['emulator_cpu_s_converge']} s"),
        ("operator peak RSS (VmHWM)", lambda r: f"{r['operator_rss_mb']['peak']} MB"),
        ("validation errors (422)", lambda r: str(r["writes_idle"]["validation_errors"])),
    ]
    head = f"{'metric':<58}" + "".join(f"{'N=' + str(r['count']):>18}" for r in results)
    print(head)
    print("-" * len(head))
    for label, fmt in rows:
        print(f"{label:<58}" + "".join(f"{fmt(r):>18}" for r in results))


def main() -> int:
    """Run the benchmark for N=1 and N=--count, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="InferenceServices in the large run (default 500)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle window after convergence")
    parser.add_argument("--timeout", type=float, default=180.0, help="max seconds to wait for convergence")
    parser.add_argument("--one-by-one", type=int, default=20,
                        help="then create this many more, one at a time, each after the previous converged")
    parser.add_argument("--profile", type=Path, help="py-spy the operator while the large batch converges "
                        "(.svg flame graph, .json speedscope, .txt collapsed stacks)")
    parser.add_argument("--quotas", type=int, default=0, help="InferenceQuotas deciding the services (default 0)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    load_before = os.getloadavg()
    results = []
    for count in sorted({1, args.count}):
        print(f"running N={count} ...", flush=True)
        profile = args.profile if args.profile and count == max(1, args.count) else None
        results.append(run_size(count, args.idle_seconds, args.timeout, log_dir, args.one_by_one, profile,
                                args.quotas))
    print_table(results)
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (other work on this machine)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
               "command": " ".join([Path(sys.executable).name, *sys.argv]), "poll_interval_s": POLL,
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               "results": results}
    args.output.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
