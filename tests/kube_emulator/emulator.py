"""KubeEmulator: the emulator in a background thread with its own event loop, plus test hooks."""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

import yaml
from aiohttp import web

from .resources import Resource
from .server import Fault, Server, Write
from .store import ApiError, Store, ValidationRecord

T = TypeVar("T")
TEST_MANAGER = "kube-emulator-test"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KubeEmulator:
    """A local Kubernetes API emulator on 127.0.0.1 (see docs/testing.md).

    Use `with KubeEmulator() as kube:` (sync or async tests) or `start()`/`stop()`.
    """

    def __init__(self, port: int | None = None, namespaces: tuple[str, ...] = ("default",)) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._namespaces = namespaces
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._server: Server | None = None
        self._store: Store | None = None
        self._kubeconfig: str | None = None
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> KubeEmulator:
        """Start serving in a background thread; returns when the port accepts connections."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="kube-emulator", daemon=True)
        self._thread.start()
        ready.result(timeout=30)
        return self

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # noqa: BLE001 - report start-up failures to the starting thread
            if not ready.done():
                ready.set_exception(exc)
        finally:
            loop.close()

    async def _serve(self, ready: Future[None]) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._store = Store(
            on_change=lambda: self._server.notify() if self._server else None,
            schedule=lambda delay, fn: loop.call_later(delay, fn) and None,
        )
        self._server = Server(self._store)
        for ns in self._namespaces:
            self._store.create(
                self._store.registry.by_kind("Namespace"), None, {"metadata": {"name": ns}}, TEST_MANAGER
            )
        self._runner = web.AppRunner(self._server.app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        ready.set_result(None)
        await self._stopped.wait()
        self._server.notify()
        await self._runner.cleanup()

    def stop(self) -> None:
        """Stop serving and join the thread; removes the kubeconfig file written by `kubeconfig()`."""
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=10)
        if self._kubeconfig and os.path.exists(self._kubeconfig):
            os.unlink(self._kubeconfig)
        self._kubeconfig = None

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> KubeEmulator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def kubeconfig(self, path: str | None = None) -> str:
        """Write a kubeconfig pointing at the emulator (no auth) and return its path."""
        if path is None:
            fd, path = tempfile.mkstemp(prefix="kube-emulator-", suffix=".yaml")
            os.close(fd)
            self._kubeconfig = path
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"},
                }
            ],
        }
        with open(path, "w") as fh:
            yaml.safe_dump(config, fh)
        return path

    # ------------------------------------------------------------ running code on the loop

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        assert self._loop is not None, "the emulator is not started"

        async def run() -> T:
            return fn()

        if threading.current_thread() is self._thread:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    @property
    def store(self) -> Store:
        """The underlying store (only touch it through `_call` from other threads)."""
        assert self._store is not None, "the emulator is not started"
        return self._store

    def resource(self, ref: str) -> Resource:
        """Resolve a Kind / plural / plural.group / apiVersion/Kind / short name to a served resource."""
        return self._call(lambda: self.store.registry.by_kind(ref))

    # ------------------------------------------------------------ observation hooks

    @property
    def writes(self) -> list[Write]:
        """Every mutating HTTP request received since the last reset: (verb, path, fieldManager)."""
        assert self._server is not None
        return list(self._server.writes)

    @property
    def requests(self) -> int:
        """How many HTTP requests were received since the last reset."""
        assert self._server is not None
        return self._server.requests

    @property
    def request_log(self) -> list[tuple[str, str]]:
        """The last 20000 requests received: (method, path with query)."""
        assert self._server is not None
        return list(self._server.log)

    @property
    def validation_errors(self) -> list[ValidationRecord]:
        """Every write rejected as invalid (422): (verb, kind, namespace, name, message)."""
        return list(self.store.validation_errors)

    @property
    def pruned_fields(self) -> list[tuple[str, str | None, str | None, list[str]]]:
        """Unknown fields silently pruned from custom resources: (kind, namespace, name, paths)."""
        return list(self.store.pruned_fields)

    def reset_counters(self) -> None:
        """Clear `writes` and `requests` (validation errors and pruned fields are kept)."""

        def reset() -> None:
            assert self._server is not None
            self._server.writes.clear()
            self._server.requests = 0

        self._call(reset)

    def inject(
        self,
        method: str | None = None,
        path_regex: str | None = None,
        status: int | None = 500,
        times: int = 1,
        delay: float = 0.0,
    ) -> Fault:
        """Fail (with `status`) or slow down (by `delay` s; status=None to then serve normally) the next
        `times` requests matching the method and the regex (searched in path+query)."""
        fault = Fault(method, path_regex, status, times, delay)
        assert self._server is not None
        self._call(lambda: self._server.faults.append(fault) if self._server else None)
        return fault

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._call(lambda: self._server.faults.clear() if self._server else None)

    # ------------------------------------------------------------ convenience API for tests

    def _res_ns(self, ref: str, namespace: str | None) -> tuple[Resource, str | None]:
        res = self.resource(ref)
        return res, (namespace or "default") if res.namespaced else None

    def get(self, ref: str, namespace: str | None = None, name: str | None = None) -> dict[str, Any] | None:
        """A deep copy of one object, or None if absent. `ref` is a kind ref or an API path."""
        if ref.startswith("/"):
            return self._get_path(ref)
        res, ns = self._res_ns(ref, namespace)
        assert name is not None, "name is required"

        def fetch() -> dict[str, Any] | None:
            try:
                return copy.deepcopy(self.store.get(res, ns, name))
            except ApiError:
                return None

        return self._call(fetch)

    def _get_path(self, path: str) -> dict[str, Any] | None:
        assert self._server is not None
        parsed = self._server._parse(path)
        if parsed is None or not parsed[2]:
            raise ValueError(f"not a resource path: {path}")
        target = self._call(lambda: self._server._resource(*parsed) if self._server else None)
        assert target is not None and target.name is not None
        try:
            return copy.deepcopy(self._call(lambda: self.store.get(target.res, target.namespace, target.name)))
        except ApiError:
            return None

    def list(self, ref: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        """Deep copies of the objects of a kind (all namespaces when namespace is None)."""
        res = self.resource(ref)
        return self._call(lambda: copy.deepcopy(self.store.list(res, namespace, label_selector)))

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object (validated like any write) from its apiVersion/kind; returns the stored copy."""
        res = self.resource(f"{obj['apiVersion']}/{obj['kind']}")
        ns = (obj.get("metadata", {}).get("namespace") or "default") if res.namespaced else None
        return self._call(lambda: copy.deepcopy(self.store.create(res, ns, obj, TEST_MANAGER)))

    def _patch(
        self, ref: str, namespace: str | None, name: str, patch: dict[str, Any], sub: str | None
    ) -> dict[str, Any]:
        from .patching import merge_patch

        res, ns = self._res_ns(ref, namespace)

        def run() -> dict[str, Any]:
            old = self.store.get(res, ns, name)
            new = merge_patch(old, patch)
            return copy.deepcopy(self.store.commit("patch", res, ns, name, old, new, sub, TEST_MANAGER))

        return self._call(run)

    def patch(self, ref: str, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the main resource (like `kubectl patch --type=merge`)."""
        return self._patch(ref, namespace, name, patch, None)

    def patch_status(self, ref: str, namespace: str | None, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch `status` through the status subresource (play a controller)."""
        return self._patch(ref, namespace, name, {"status": status}, "status")

    def delete(self, ref: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Delete an object (finalizers and garbage collection apply); None if it did not exist."""
        res, ns = self._res_ns(ref, namespace)

        def run() -> dict[str, Any] | None:
            try:
                return copy.deepcopy(self.store.delete(res, ns, name))
            except ApiError:
                return None

        return self._call(run)

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """Play the kubelet: what GET pods/NAME/log returns for a pod."""
        assert self._server is not None
        server = self._server
        self._call(lambda: server.pod_logs.__setitem__((namespace, name), text))

    def mark_deployment_available(self, namespace: str, name: str, ready: bool = True) -> dict[str, Any]:
        """Play the Deployment controller: all replicas ready and Available=True (or not ready)."""
        dep = self.get("Deployment", namespace, name)
        assert dep is not None, f"no Deployment {namespace}/{name}"
        replicas = dep["spec"].get("replicas", 1)
        now = dep["metadata"]["creationTimestamp"]
        avail = replicas if ready else 0
        cond = [
            {
                "type": "Available",
                "status": "True" if ready else "False",
                "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if ready
                else "Deployment does not have minimum availability.",
                "lastTransitionTime": now,
                "lastUpdateTime": now,
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if ready else "ReplicaSetUpdated",
                "message": f'ReplicaSet "{name}" has successfully progressed.',
                "lastTransitionTime": now,
                "lastUpdateTime": now,
            },
        ]
        return self.patch_status(
            "Deployment",
            namespace,
            name,
            {
                "observedGeneration": dep["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": avail,
                "availableReplicas": avail,
                "unavailableReplicas": replicas - avail or None,
                "conditions": cond,
            },
        )
