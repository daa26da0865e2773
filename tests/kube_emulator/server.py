"""The HTTP layer: routing of Kubernetes API paths, patches, watches, scale, fault injection, write log."""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import re
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml
from aiohttp import web

from . import openapi, patching, protobuf, tables
from .patching import PatchError
from .resources import Resource
from .store import ApiError, Store
from .validation import KUBERNETES_VERSION

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


class Write(NamedTuple):
    """One mutating request received: HTTP verb, path (without query) and its fieldManager (or None)."""

    verb: str
    path: str
    field_manager: str | None


@dataclass
class Fault:
    """An injected fault: matching requests get `status` (or only a `delay`) for the next `times` hits."""

    method: str | None
    path_regex: str | None
    status: int | None
    times: int
    delay: float
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        """Whether the fault applies to this request (and has hits left)."""
        if self.times <= 0:
            return False
        if self.method and self.method.upper() != request.method:
            return False
        return not self.path_regex or re.search(self.path_regex, request.path_qs) is not None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


class Parsed(NamedTuple):
    """A resource request: what it addresses."""

    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None


class Server:
    """The aiohttp application around a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[Write] = []
        self.requests = 0
        self.faults: list[Fault] = []
        self.log: collections.deque[tuple[str, str]] = collections.deque(maxlen=20000)
        self.pod_logs: dict[tuple[str, str], str] = {}
        self.changed = asyncio.get_running_loop().create_future()
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    def notify(self) -> None:
        """Wake every watcher (called by the store after each event)."""
        if not self.changed.done():
            self.changed.set_result(None)
        self.changed = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------ routing

    def _parse(self, path: str) -> tuple[str, str, list[str]] | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            return "", parts[1], parts[2:]
        if len(parts) >= 3 and parts[0] == "apis":
            return parts[1], parts[2], parts[3:]
        return None

    def _resource(self, group: str, version: str, rest: list[str]) -> Parsed:
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            ns, rest = rest[1], rest[2:]
        res = self.store.registry.find(group, version, rest[0])
        if res is None:
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({group or 'core'}/{version}/{rest[0]})",
            )
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (
            sub not in (None, "status", "scale")
            or (sub == "status" and not res.status)
            or (sub == "scale" and not res.scale)
        ):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({sub})")
        if not res.namespaced:
            ns = None
        return Parsed(res, ns, name, sub)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Entry point of every request: log, inject faults, dispatch."""
        self.requests += 1
        self.log.append((request.method, request.path_qs))
        if request.method in MUTATING:
            self.writes.append(Write(request.method, request.path, request.query.get("fieldManager")))
        for fault in self.faults:
            if fault.matches(request):
                fault.times -= 1
                fault.hits += 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    return _error(
                        ApiError(
                            fault.status,
                            "InjectedFault",
                            f"fault injected by the test (status {fault.status})",
                        )
                    )
                break
        try:
            return await self._dispatch(request)
        except ApiError as exc:
            return _error(exc)
        except PatchError as exc:
            return _error(ApiError(exc.code, "Invalid" if exc.code == 422 else "BadRequest", exc.message))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        reg = self.store.registry
        path = request.path.rstrip("/") or "/"
        if path == "/version":
            return _json(
                {
                    "major": "1",
                    "minor": KUBERNETES_VERSION.split(".")[1],
                    "gitVersion": f"v{KUBERNETES_VERSION}.0-kube-emulator",
                    "platform": "linux/amd64",
                }
            )
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/api":
            return _json(reg.api_versions())
        if path == "/apis":
            return _json(reg.api_groups())
        if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            return self._openapi(path)
        parsed = self._parse(path)
        if parsed is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        group, version, rest = parsed
        if not rest:
            doc = reg.resource_list(group, version)
            if doc is None:
                raise ApiError(404, "NotFound", f"the server could not find {group}/{version}")
            return _json(doc)
        if group == "" and version != "v1":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if group == "" and len(rest) == 5 and rest[0] == "namespaces" and rest[2] == "pods" and rest[4] == "log":
            return self._pod_log(request, rest[1], rest[3])
        target = self._resource(group, version, rest)
        method = request.method
        if method == "GET":
            if target.name is None:
                if request.query.get("watch") in ("true", "1"):
                    return await self._watch(request, target)
                return self._list(request, target)
            obj = self.store.get(target.res, target.namespace, target.name)
            if target.sub == "scale":
                return _json(self._scale_of(target.res, obj))
            return _json(self._as_table(request, target.res, [obj]) or obj)
        return await self._mutate(request, target)

    # ------------------------------------------------------------ what kubectl needs besides CRUD

    def _openapi(self, path: str) -> web.Response:
        """/openapi/v3 (the index) and /openapi/v3/api/v1, /openapi/v3/apis/GROUP/VERSION."""
        reg = self.store.registry
        if path == "/openapi/v3":
            return _json(openapi.index(reg))
        parts = path[len("/openapi/v3/"):].split("/")
        gv = ("", parts[1]) if parts[0] == "api" and len(parts) == 2 else (
            (parts[1], parts[2]) if parts[0] == "apis" and len(parts) == 3 else None)
        found = openapi.gv_document(reg, *gv) if gv else None
        if found is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        return _json(found[0])

    def _as_table(self, request: web.Request, res: Resource, objects: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A Table of the objects when the client asked for one (kubectl get), else None."""
        version = tables.table_version(request.headers.get("Accept", ""))
        if version is None:
            return None
        include = request.query.get("includeObject") or "Metadata"
        return tables.table(res, objects, str(self.store.rv), include, version)

    # ------------------------------------------------------------ reads

    def _pod_log(self, request: web.Request, namespace: str, name: str) -> web.Response:
        """GET pods/NAME/log: the text a test set with KubeEmulator.set_pod_log (tailLines honoured)."""
        if request.method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"pods/log does not support {request.method}")
        if (namespace, name) not in self.pod_logs:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        lines = self.pod_logs[(namespace, name)].splitlines()
        tail = request.query.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail):] if int(tail) else []
        return web.Response(text="\n".join(lines) + ("\n" if lines else ""), content_type="text/plain")

    def _list(self, request: web.Request, t: Parsed) -> web.Response:
        items = self.store.list(
            t.res, t.namespace, request.query.get("labelSelector"), request.query.get("fieldSelector")
        )
        shown = self._as_table(request, t.res, items)
        if shown is not None:
            return _json(shown)
        return _json(
            {
                "kind": f"{t.res.kind}List",
                "apiVersion": t.res.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, t: Parsed) -> web.StreamResponse:
        q = request.query
        labels, fields = q.get("labelSelector"), q.get("fieldSelector")
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        deadline = time.monotonic() + timeout if timeout else None
        since = q.get("resourceVersion") or "0"
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj["metadata"]
            return (
                (t.namespace is None or meta.get("namespace") == t.namespace)
                and patching.label_match(labels, meta.get("labels"))
                and patching.field_match(fields, obj)
            )

        def shown(obj: dict[str, Any]) -> dict[str, Any]:
            return self._as_table(request, t.res, [obj]) or obj

        if since == "0":
            lines = [
                json.dumps({"type": "ADDED", "object": shown(o)}) + "\n"
                for o in self.store.list(t.res, t.namespace, labels, fields)
            ]
            rv = self.store.rv
            if lines:
                await resp.write("".join(lines).encode())
        else:
            try:
                rv = int(since)
            except ValueError:
                rv = self.store.rv
        key = t.res.key
        try:
            while True:
                try:
                    events = self.store.events_since(t.res, rv)
                except ApiError as exc:
                    await resp.write((json.dumps({"type": "ERROR", "object": exc.status()}) + "\n").encode())
                    break
                chunk = [json.dumps({"type": e.type, "object": shown(e.obj)}) + "\n" for e in events if wanted(e.obj)]
                if events:
                    rv = events[-1].rv
                if chunk:
                    await resp.write("".join(chunk).encode())
                if (
                    self.store.registry.find(t.res.group, t.res.version, t.res.plural) is None
                    or key not in self.store.objects
                    and t.res.crd_name
                ):
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if q.get("allowWatchBookmarks") in ("true", "1"):
                        mark = {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": t.res.kind,
                                "apiVersion": t.res.api_version,
                                "metadata": {"resourceVersion": str(self.store.rv)},
                            },
                        }
                        await resp.write((json.dumps(mark) + "\n").encode())
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(self.changed), remaining)
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------ writes

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        ctype = request.content_type
        if ctype == protobuf.CONTENT_TYPE:
            try:
                return protobuf.decode(raw)
            except protobuf.Unsupported as exc:
                raise ApiError(415, "UnsupportedMediaType", str(exc)) from None
        try:
            if ctype == "application/apply-patch+yaml" and raw.lstrip()[:1] != b"{":
                return yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"cannot parse the request body: {exc}") from None

    async def _mutate(self, request: web.Request, t: Parsed) -> web.Response:
        q = request.query
        manager = q.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
        strict = q.get("fieldValidation") == "Strict"
        dry = bool(q.get("dryRun"))
        body = await self._body(request)
        store, method = self.store, request.method
        if method == "POST":
            if t.name is not None:
                raise ApiError(405, "MethodNotAllowed", "POST is not allowed on a named object")
            return _json(store.create(t.res, t.namespace, body, manager, strict, dry), 201)
        if t.name is None:
            if method == "DELETE":
                items = store.list(t.res, t.namespace, q.get("labelSelector"), q.get("fieldSelector"))
                gone = [store.delete(t.res, t.namespace, o["metadata"]["name"], body) for o in items]
                return _json(
                    {
                        "kind": f"{t.res.kind}List",
                        "apiVersion": t.res.api_version,
                        "metadata": {"resourceVersion": str(store.rv)},
                        "items": gone,
                    }
                )
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if method == "DELETE":
            return _json(store.delete(t.res, t.namespace, t.name, body, dry))
        if method == "PATCH" and request.content_type == "application/apply-patch+yaml":
            if t.sub == "scale":
                raise ApiError(415, "UnsupportedMediaType", "apply to /scale is not supported by the emulator")
            obj, created = store.apply(
                t.res,
                t.namespace,
                t.name,
                body,
                q.get("fieldManager"),
                q.get("force") in ("true", "1"),
                t.sub,
                strict,
                dry,
            )
            return _json(obj, 201 if created else 200)
        old = store.get(t.res, t.namespace, t.name)
        if t.sub == "scale":
            return _json(self._write_scale(t, old, body, request.content_type, manager, dry))
        if method == "PUT":
            new = copy.deepcopy(body) if isinstance(body, dict) else None
            if new is None:
                raise ApiError(400, "BadRequest", "the body must be an object")
        else:
            new = self._patched(old, body, request.content_type)
            if isinstance(body, dict) and not (body.get("metadata") or {}).get("resourceVersion"):
                new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
        return _json(
            store.commit(
                "update" if method == "PUT" else "patch",
                t.res,
                t.namespace,
                t.name,
                old,
                new,
                t.sub,
                manager,
                strict,
                dry,
            )
        )

    @staticmethod
    def _patched(old: dict[str, Any], body: Any, ctype: str) -> dict[str, Any]:
        if ctype == "application/json-patch+json":
            new = patching.json_patch(old, body)
        elif ctype == "application/strategic-merge-patch+json":
            new = patching.strategic_merge_patch(old, body)
        elif ctype in ("application/merge-patch+json", "application/json"):
            new = patching.merge_patch(old, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the patch type {ctype!r} is not supported")
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not an object")
        return new

    # ------------------------------------------------------------ scale

    @staticmethod
    def _scale_paths(res: Resource) -> tuple[list[str], list[str], list[str] | None]:
        p = res.scale_paths or {}
        split = lambda s: s.lstrip(".").split(".")  # noqa: E731
        sel = p.get("labelSelectorPath")
        return (
            split(p.get("specReplicasPath", ".spec.replicas")),
            split(p.get("statusReplicasPath", ".status.replicas")),
            split(sel) if sel else None,
        )

    def _scale_of(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        spec_p, status_p, sel_p = self._scale_paths(res)
        selector: Any = None
        if res.scale_paths is None:
            labels = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        elif sel_p:
            selector = patching.get_path(obj, tuple(sel_p))[1]
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
            },
            "spec": {"replicas": patching.get_path(obj, tuple(spec_p))[1] or 0},
            "status": {
                "replicas": patching.get_path(obj, tuple(status_p))[1] or 0,
                **({"selector": selector} if selector else {}),
            },
        }

    def _write_scale(
        self, t: Parsed, old: dict[str, Any], body: Any, ctype: str, manager: str, dry: bool
    ) -> dict[str, Any]:
        scale = self._scale_of(t.res, old)
        new_scale = copy.deepcopy(body) if ctype not in MERGE_TYPES else self._patched(scale, body, ctype)
        replicas = (new_scale or {}).get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", "Scale.spec.replicas: Invalid value: must be a non-negative integer")
        sent_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {t.res.plural} "{t.name}"')
        new = copy.deepcopy(old)
        patching.set_path(new, tuple(self._scale_paths(t.res)[0]), replicas)
        obj = self.store.commit("scale", t.res, t.namespace, t.name, old, new, None, manager, dry_run=dry)
        return self._scale_of(t.res, obj)


MERGE_TYPES = {
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/merge-patch+json",
}
