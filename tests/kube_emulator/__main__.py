"""Run the emulator as a process: `python -m tests.kube_emulator [--port N] [--kubeconfig PATH]`."""

from __future__ import annotations

import argparse
import signal
import threading

from .emulator import KubeEmulator


def main() -> None:
    """Serve until SIGINT/SIGTERM; print the kubeconfig path."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--kubeconfig", default=None, help="where to write the kubeconfig")
    args = parser.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with KubeEmulator(port=args.port) as kube:
        print(f"serving {kube.url}; KUBECONFIG={kube.kubeconfig(args.kubeconfig)}", flush=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
