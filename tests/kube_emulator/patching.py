"""Pure data helpers: merge/strategic/JSON patches, selectors, and field sets for server-side apply."""

from __future__ import annotations

import copy
import re
from typing import Any

Path = tuple[str, ...]


class PatchError(Exception):
    """A patch that cannot be applied; `code` is the HTTP status to answer with."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value and never mutates its inputs."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists that real strategic merge merges by a key instead of replacing (an approximation).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
}


def strategic_merge_patch(target: Any, patch: Any, key: str = "") -> Any:
    """Approximate strategic merge: merge patch, but known lists are merged by their merge key."""
    if isinstance(patch, list) and isinstance(target, list) and key in _MERGE_KEYS:
        mkey = _MERGE_KEYS[key]
        if all(isinstance(i, dict) and mkey in i for i in patch + target):
            out = [copy.deepcopy(i) for i in target]
            index = {i[mkey]: n for n, i in enumerate(out)}
            for item in patch:
                if item.get("$patch") == "delete":
                    if item[mkey] in index:
                        out = [i for i in out if i[mkey] != item[mkey]]
                        index = {i[mkey]: n for n, i in enumerate(out)}
                elif item[mkey] in index:
                    out[index[item[mkey]]] = strategic_merge_patch(out[index[item[mkey]]], item)
                else:
                    out.append(copy.deepcopy(item))
                    index[item[mkey]] = len(out) - 1
            return out
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, value in patch.items():
        if k.startswith("$"):
            continue
        if value is None:
            result.pop(k, None)
        else:
            result[k] = strategic_merge_patch(result.get(k), value, k)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise PatchError(f"path not found: /{'/'.join(parts)}")
            doc = doc[part]
        elif isinstance(doc, list):
            try:
                doc = doc[int(part)]
            except (ValueError, IndexError):
                raise PatchError(f"path not found: /{'/'.join(parts)}") from None
        else:
            raise PatchError(f"path not found: /{'/'.join(parts)}")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            idx = int(last)
            if idx > len(parent):
                raise PatchError(f"index out of range: {last}")
            parent.insert(idx, value)
    else:
        raise PatchError("cannot add to a scalar")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    try:
        if isinstance(parent, dict):
            return parent.pop(last)
        if isinstance(parent, list):
            return parent.pop(int(last))
    except (KeyError, ValueError, IndexError):
        pass
    raise PatchError(f"path not found: /{'/'.join(parts)}")


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch; a failed `test` raises PatchError with HTTP 422 (as kopf expects)."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations", 400)
    doc = copy.deepcopy(target)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = _remove(doc, src) if kind == "move" else copy.deepcopy(_walk(doc, src))
            doc = _add(doc, parts, value)
        elif kind == "test":
            try:
                actual = _walk(doc, parts)
            except PatchError:
                actual = None
            if actual != op.get("value"):
                raise PatchError(
                    f"the test operation failed at {op.get('path')}: expected {op.get('value')!r}, found {actual!r}",
                    422,
                )
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}", 400)
    return doc


# ---------------------------------------------------------------- selectors

_REQ = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(==|!=|=|\s+in\s+|\s+notin\s+)\s*(.*?))?\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def label_match(selector: str | None, labels: dict[str, str] | None) -> bool:
    """Whether labels satisfy a Kubernetes label selector string (=, ==, !=, in, notin, exists, !)."""
    if not selector:
        return True
    labels = labels or {}
    for req in _split_selector(selector):
        m = _REQ.match(req)
        if not m:
            raise PatchError(f"unable to parse requirement: {req!r}", 400)
        neg, key, op, value = m.groups()
        op = (op or "").strip()
        if not op:
            if (key in labels) == bool(neg):
                return False
        elif op in ("=", "=="):
            if labels.get(key) != value:
                return False
        elif op == "!=":
            if labels.get(key) == value:
                return False
        else:
            values = {v.strip() for v in value.strip().strip("()").split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and labels.get(key) in values:
                return False
    return True


# Field labels a real API server accepts beyond metadata.name/namespace, per kind (kubectl describe uses the
# Event ones to list an object's events).
_EVENT_FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                 "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
                 "reason", "reportingComponent", "source", "type", "regarding.kind", "regarding.namespace",
                 "regarding.name", "regarding.uid", "regarding.apiVersion", "reportingController")
FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "Event": _EVENT_FIELDS,
    "Pod": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
            "status.phase", "status.podIP", "status.nominatedNodeName"),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
    "Job": ("status.successful",),
}


def _field_value(obj: dict[str, Any], label: str) -> str | None:
    if label == "source" and obj.get("kind") == "Event":
        return (obj.get("source") or {}).get("component") or obj.get("reportingComponent")
    node: Any = obj
    for key in label.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return str(node).lower()
    return None if node is None else str(node)


def parse_field_selector(selector: str | None, kind: str) -> list[tuple[str, str, bool]]:
    """(field label, value, negated) of each requirement; 400 for a label the kind does not support."""
    allowed = {"metadata.name", "metadata.namespace", *FIELD_LABELS.get(kind, ())}
    out = []
    for req in (selector or "").split(","):
        if not req.strip():
            continue
        negate = "!=" in req
        if not negate and "=" not in req:
            raise PatchError(f"invalid field selector: {req!r}", 400)
        key, value = req.split("!=", 1) if negate else req.replace("==", "=").split("=", 1)
        if key.strip() not in allowed:
            raise PatchError(f"field label not supported: {key.strip()}", 400)
        out.append((key.strip(), value.strip(), negate))
    return out


def field_match(selector: str | None, obj: dict[str, Any]) -> bool:
    """Whether an object satisfies a field selector (= and !=) on metadata.name / metadata.namespace and the
    kind's field labels (FIELD_LABELS); a missing field compares as the empty string, as on a real server."""
    for key, value, negate in parse_field_selector(selector, obj.get("kind", "")):
        if ((_field_value(obj, key) or "") == value) == negate:
            return False
    return True


# ---------------------------------------------------------------- server-side apply field sets

_IDENTITY: set[Path] = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def leaf_paths(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Leaf paths of a document: dicts recurse, lists and scalars are atomic leaves."""
    out: dict[Path, Any] = {}
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            out.update(leaf_paths(value, prefix + (key,)))
    else:
        out[prefix] = obj
    return out


def applied_fields(obj: dict[str, Any]) -> dict[Path, Any]:
    """The fields an apply body sets (identity fields excluded)."""
    return {p: v for p, v in leaf_paths(obj).items() if p not in _IDENTITY and p}


def get_path(doc: Any, path: Path) -> tuple[bool, Any]:
    """(found, value) at a path of nested dicts."""
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return False, None
        doc = doc[part]
    return True, doc


def remove_path(doc: dict[str, Any], path: Path) -> None:
    """Remove a path from nested dicts in place, pruning parents left empty."""
    stack = []
    cur: Any = doc
    for part in path[:-1]:
        if not isinstance(cur, dict) or part not in cur:
            return
        stack.append((cur, part))
        cur = cur[part]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
        for parent, part in reversed(stack):
            if parent[part] == {}:
                del parent[part]
            else:
                break


def set_path(doc: dict[str, Any], path: Path, value: Any) -> None:
    """Set a value at a path of nested dicts, creating parents."""
    cur = doc
    for part in path[:-1]:
        if not isinstance(cur.get(part), dict):
            cur[part] = {}
        cur = cur[part]
    cur[path[-1]] = copy.deepcopy(value)


def changed_paths(old: Any, new: Any, prefix: Path = ()) -> set[Path]:
    """Leaf paths whose value differs between two documents (added, changed or removed)."""
    if isinstance(old, dict) and isinstance(new, dict) and (old or new):
        out: set[Path] = set()
        for key in set(old) | set(new):
            if key not in old or key not in new:
                out.update(leaf_paths(new.get(key) if key in new else old[key], prefix + (key,)))
            elif old[key] != new[key]:
                out.update(changed_paths(old[key], new[key], prefix + (key,)))
        return out
    return {prefix} if old != new else set()
