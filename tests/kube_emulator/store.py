"""The emulator's state: objects, the global resourceVersion, per-resource event history, field managers,
garbage collection. All methods are synchronous and run on the emulator's event loop thread."""

from __future__ import annotations

import bisect
import copy
import datetime
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from . import patching, validation
from .patching import PatchError, Path
from .resources import Registry, Resource, resources_from_crd

HISTORY_LIMIT = 20000  # events kept per resource for watch resumption; older resourceVersions get 410


class ApiError(Exception):
    """An error answered as a Kubernetes Status object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        """The Status body."""
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            **({"details": self.details} if self.details else {}),
            "code": self.code,
        }


def _invalid_details(res: Resource, name: str | None, message: str) -> dict[str, Any]:
    """Status details of a 422 (kubectl prints `The KIND "NAME" is invalid:` and one line per cause)."""
    causes = []
    for part in message.split(" is invalid: ", 1)[-1].split("; "):
        field, sep, rest = part.partition(": ")
        causes.append({"reason": "FieldValueInvalid", "field": field if sep else "", "message": rest if sep else part})
    return {"name": name or "", "group": res.group, "kind": res.kind, "causes": causes}


class Event(NamedTuple):
    """One watch event in a resource's history."""

    rv: int
    type: str
    obj: dict[str, Any]


class ValidationRecord(NamedTuple):
    """A rejected write: what was sent where, and why the emulator (as the API server) refused it."""

    verb: str
    kind: str
    namespace: str | None
    name: str | None
    message: str


ObjKey = tuple[tuple[str, str], str | None, str]
_ENVELOPE = ("apiVersion", "kind", "metadata", "status")
_DEFAULT_REPLICAS = {"Deployment", "StatefulSet", "ReplicaSet"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found(res: Resource, name: str | None) -> ApiError:
    return ApiError(404, "NotFound", f'{res.plural}.{res.group or "core"} "{name}" not found')


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


class Store:
    """In-memory API state; `on_change` is called after every stored event (to wake watchers)."""

    def __init__(self, on_change: Callable[[], None], schedule: Callable[[float, Callable[[], None]], None]):
        self.registry = Registry()
        self.objects: dict[tuple[str, str], dict[tuple[str | None, str], dict[str, Any]]] = {}
        self.history: dict[tuple[str, str], list[Event]] = {}
        self.managers: dict[ObjKey, dict[tuple[str, str], set[Path]]] = {}
        self.rv = 0
        self.validation_errors: list[ValidationRecord] = []
        self.pruned_fields: list[tuple[str, str | None, str | None, list[str]]] = []
        self._on_change = on_change
        self._schedule = schedule
        self._names = 0

    # ------------------------------------------------------------ reading

    def bucket(self, res: Resource) -> dict[tuple[str | None, str], dict[str, Any]]:
        """The objects of a resource, keyed by (namespace, name)."""
        return self.objects.setdefault(res.key, {})

    def get(self, res: Resource, ns: str | None, name: str) -> dict[str, Any]:
        """The stored object (do not mutate it) or 404."""
        obj = self.bucket(res).get((ns if res.namespaced else None, name))
        if obj is None:
            raise _not_found(res, name)
        return obj

    def list(
        self, res: Resource, ns: str | None, labels: str | None = None, fields: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of a resource in a namespace (all if ns is None), filtered by selectors."""
        try:
            patching.parse_field_selector(fields, res.kind)  # a bad selector is a 400 even when nothing matches
            return [
                o
                for (ons, _), o in sorted(self.bucket(res).items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
                if (ns is None or ons == ns)
                and patching.label_match(labels, o["metadata"].get("labels"))
                and patching.field_match(fields, o)
            ]
        except PatchError as exc:
            raise ApiError(exc.code, "BadRequest", exc.message) from None

    def events_since(self, res: Resource, rv: int) -> list[Event]:
        """History events of a resource after a resourceVersion; 410 if that part was compacted."""
        hist = self.history.get(res.key, [])
        if hist and rv < hist[0].rv - 1 and self._compacted(res):
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({hist[0].rv})")
        return hist[bisect.bisect_right(hist, rv, key=lambda e: e.rv) :]

    def _compacted(self, res: Resource) -> bool:
        return getattr(self, "_compacted_keys", set()).__contains__(res.key)

    # ------------------------------------------------------------ writing

    def _emit(self, res: Resource, etype: str, obj: dict[str, Any]) -> None:
        hist = self.history.setdefault(res.key, [])
        hist.append(Event(self.rv, etype, obj))
        if len(hist) > HISTORY_LIMIT:
            del hist[: len(hist) - HISTORY_LIMIT]
            if not hasattr(self, "_compacted_keys"):
                self._compacted_keys: set[tuple[str, str]] = set()
            self._compacted_keys.add(res.key)
        self._on_change()

    def _reject(self, verb: str, res: Resource, ns: str | None, name: str | None, message: str) -> ApiError:
        self.validation_errors.append(ValidationRecord(verb, res.kind, ns, name, message))
        return ApiError(422, "Invalid", message, _invalid_details(res, name, message))

    def create(
        self,
        res: Resource,
        ns: str | None,
        body: dict[str, Any],
        manager: str = "unknown",
        strict_fields: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """POST: create a new object (generateName honoured); 409 if it exists."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            self._names += 1
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        if not meta.get("name"):
            raise self._reject(
                "create",
                res,
                ns,
                None,
                f"{res.kind}: metadata.name: Required value: name or generateName is required",
            )
        if res.namespaced:
            ns = ns or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
        if (ns if res.namespaced else None, meta["name"]) in self.bucket(res):
            raise ApiError(409, "AlreadyExists", f'{res.plural}.{res.group or "core"} "{meta["name"]}" already exists')
        return self.commit("create", res, ns, meta["name"], None, obj, None, manager, strict_fields, dry_run)

    def commit(
        self,
        verb: str,
        res: Resource,
        ns: str | None,
        name: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        sub: str | None,
        manager: str,
        strict_fields: bool = False,
        dry_run: bool = False,
        track_updates: bool = True,
    ) -> dict[str, Any]:
        """Store a new state of an object: metadata, status isolation, validation, events, GC."""
        ns = ns if res.namespaced else None
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise self._reject(verb, res, ns, name, "metadata must be an object")
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name in the URL ({name})",
            )
        meta["name"] = name
        if ns is not None:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        sent_rv = meta.get("resourceVersion")
        if old is not None and sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.plural} "{name}": the '
                "object has been modified; please apply your changes to the latest version and try again",
            )
        if old is not None:
            ometa = old["metadata"]
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if key in ometa:
                    meta[key] = ometa[key]
                else:
                    meta.pop(key, None)
            if ometa.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(ometa.get("finalizers") or [])
                if added:
                    raise self._reject(
                        verb,
                        res,
                        ns,
                        name,
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                    )
        else:
            for key in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "resourceVersion"):
                meta.pop(key, None)
        if res.status:
            if sub == "status" and old is not None:
                status = new.get("status")
                new = {**copy.deepcopy(old), "status": status} if status is not None else copy.deepcopy(old)
                new["metadata"] = {
                    **copy.deepcopy(old["metadata"]),
                    **{k: v for k, v in meta.items() if k in ("labels", "annotations")},
                }
                meta = new["metadata"]
                if status is None:
                    new.pop("status", None)
            elif old is not None and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if res.kind in _DEFAULT_REPLICAS and isinstance(new.get("spec"), dict):
            new["spec"].setdefault("replicas", 1)
        if res.kind == "Namespace":
            new.setdefault("status", {"phase": "Active"})
        if res.kind == "CustomResourceDefinition":
            self._crd_status(new)
        try:
            if res.schema is not None or res.crd_name is not None:
                pruned = validation.validate_custom(new, old, res.schema, strict_fields)
                if pruned:
                    self.pruned_fields.append((res.kind, ns, name, pruned))
            else:
                validation.validate_builtin(new)
        except validation.Invalid as exc:
            raise self._reject(verb, res, ns, name, exc.message) from None
        if old is not None:
            if _without_rv(new) == _without_rv(old):
                return old  # a no-op write: no new resourceVersion, no event (like the real API server)
            spec_changed = any(new.get(k) != old.get(k) for k in set(new) | set(old) if k not in _ENVELOPE)
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if spec_changed else 0)
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
        if dry_run:
            return new
        if track_updates:
            self._track_update(res, ns, name, old, new, manager, sub)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        key = (ns, name)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(res, key, new)
            return new
        self.bucket(res)[key] = new
        self._emit(res, "ADDED" if old is None else "MODIFIED", new)
        if res.kind == "CustomResourceDefinition":
            self._serve_crd(new, old)
        return new

    def _track_update(
        self,
        res: Resource,
        ns: str | None,
        name: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        manager: str,
        sub: str | None,
    ) -> None:
        owners = self.managers.setdefault((res.key, ns, name), {})
        changed = {
            p
            for p in patching.changed_paths(old or {}, new)
            if p and p[0] != "metadata" or p[:2] in (("metadata", "labels"), ("metadata", "annotations"))
        }
        if not changed:
            return
        for paths in owners.values():
            paths -= changed
        owners.setdefault((manager, sub or ""), set()).update(p for p in changed if patching.get_path(new, p)[0])

    def apply(
        self,
        res: Resource,
        ns: str | None,
        name: str,
        body: dict[str, Any],
        manager: str | None,
        force: bool,
        sub: str | None,
        strict_fields: bool = False,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply with approximate field ownership; returns (object, created)."""
        if not manager:
            raise ApiError(400, "BadRequest", "PATCH with apply requires the fieldManager parameter")
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the apply body must be an object")
        ns = ns if res.namespaced else None
        old = self.bucket(res).get((ns, name))
        fields = patching.applied_fields(body)
        if res.status:
            fields = {p: v for p, v in fields.items() if (p[0] == "status") == (sub == "status")}
        okey = (res.key, ns, name)
        owners = self.managers.setdefault(okey, {})
        mine = (manager, sub or "")
        if old is not None:
            conflicts = sorted(
                {
                    (m, ".".join(p))
                    for p, v in fields.items()
                    for (m, s), paths in owners.items()
                    if (m, s) != mine and p in paths and patching.get_path(old, p) != (True, v)
                }
            )
            if conflicts and not force:
                listing = "; ".join(f'conflict with "{m}": .{p}' for m, p in conflicts)
                raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {listing}")
        live = copy.deepcopy(old) if old is not None else {"metadata": {}}
        others = set().union(*(paths for k, paths in owners.items() if k != mine)) if owners else set()
        for path in owners.get(mine, set()) - set(fields):
            if path not in others:
                patching.remove_path(live, path)
        for path, value in fields.items():
            patching.set_path(live, path, value)
        if body.get("metadata", {}).get("resourceVersion"):
            live["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
        if old is None:
            live["metadata"].update({k: v for k, v in body.get("metadata", {}).items() if k in ("generateName",)})
        result = self.commit(
            "apply", res, ns, name, old, live, sub, manager, strict_fields, dry_run, track_updates=False
        )
        if not dry_run:
            for k, paths in owners.items():
                if k != mine:
                    paths -= set(fields)
            owners[mine] = set(fields)
        return result, old is None

    def delete(
        self,
        res: Resource,
        ns: str | None,
        name: str,
        options: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """DELETE: mark for deletion when finalizers exist, otherwise remove and garbage-collect."""
        options = options or {}
        old = self.get(res, ns, name)
        pre = options.get("preconditions") or {}
        if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Precondition failed: resourceVersion of "{name}" changed')
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f'Precondition failed: UID of "{name}" changed')
        if dry_run:
            return old
        key = (ns if res.namespaced else None, name)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
            self.bucket(res)[key] = new
            self._emit(res, "MODIFIED", new)
            return new
        gone = copy.deepcopy(old)
        self.rv += 1
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._remove(res, key, gone, orphan=options.get("propagationPolicy") == "Orphan")
        return gone

    def _remove(self, res: Resource, key: tuple[str | None, str], last: dict[str, Any], orphan: bool = False) -> None:
        self.bucket(res).pop(key, None)
        self.managers.pop((res.key, key[0], key[1]), None)
        self._emit(res, "DELETED", last)
        if res.kind == "CustomResourceDefinition":
            self._unserve_crd(last)
        if res.kind == "Namespace":
            self._schedule(0.0, lambda: self._delete_namespace_content(key[1]))
        if not orphan:
            uid = last["metadata"].get("uid")
            self._schedule(0.05, lambda: self.collect_garbage(uid))

    def collect_garbage(self, uid: str | None) -> None:
        """Delete every object whose ownerReferences name this uid (background propagation)."""
        if not uid:
            return
        for res in self._storage_resources():
            for (ns, name), obj in list(self.bucket(res).items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs) and (ns, name) in self.bucket(res):
                    self.delete(res, ns, name)

    def _delete_namespace_content(self, namespace: str) -> None:
        for res in self._storage_resources():
            if res.namespaced:
                for ns, name in list(self.bucket(res)):
                    if ns == namespace:
                        self.delete(res, ns, name)

    def _storage_resources(self) -> list[Resource]:
        seen: dict[tuple[str, str], Resource] = {}
        for res in self.registry.by_gvp.values():
            seen.setdefault(res.key, res)
        return list(seen.values())

    # ------------------------------------------------------------ CRDs

    @staticmethod
    def _crd_status(crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        versions = [v["name"] for v in spec.get("versions", []) if v.get("storage")]
        crd["status"] = {
            "acceptedNames": spec.get("names", {}),
            "storedVersions": versions,
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": _now(),
                },
            ],
        }

    def _serve_crd(self, crd: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.registry.remove_crd(crd["metadata"]["name"])
        served = resources_from_crd(crd)
        storage = crd["spec"]["versions"][0]["name"]
        for ver in crd["spec"]["versions"]:
            if ver.get("storage"):
                storage = ver["name"]
        served.sort(key=lambda r: r.version != storage)
        for res in served:
            self.registry.add(res)
        if served:
            self.registry.preferred[served[0].group] = (
                storage if any(r.version == storage for r in served) else served[0].version
            )

    def _unserve_crd(self, crd: dict[str, Any]) -> None:
        gone = self.registry.remove_crd(crd["metadata"]["name"])
        if gone:
            res = gone[0]
            for key, obj in list(self.bucket(res).items()):
                self.rv += 1
                last = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
                self.bucket(res).pop(key, None)
                self._emit(res, "DELETED", last)
            self.objects.pop(res.key, None)
        self._on_change()
