"""Table responses for `kubectl get`: a CRD's additionalPrinterColumns, or a few usual columns per built-in kind.

kubectl asks with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`; the server returns rows of cells
(`meta.k8s.io/v1` Table) and kubectl only lays them out, so without this `kubectl get` shows names only.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable
from typing import Any

from jsonpath_ng.ext import parse as parse_jsonpath

from .resources import Resource

Cell = Callable[[dict[str, Any]], Any]
_NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
         "description": "Name must be unique within a namespace."}
_AGE = {"name": "Age", "type": "string", "format": "", "priority": 0,
        "description": "CreationTimestamp is when this object was created."}


def table_version(accept: str) -> str | None:
    """The meta.k8s.io version of Table an Accept header asks for (v1 preferred), or None."""
    versions = []
    for media in accept.split(","):
        params = dict(p.strip().partition("=")[::2] for p in media.split(";")[1:])
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            versions.append(params.get("v", "v1"))
    return "v1" if "v1" in versions else (versions[0] if versions else None)


def human_age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """An RFC 3339 time as kubectl's AGE (e.g. 45s, 3m20s, 5h, 2d), or <unknown>."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{days}d"


@functools.lru_cache(maxsize=512)
def _jsonpath(expr: str) -> Any:
    return parse_jsonpath("$" + expr if expr.startswith(".") else expr)


def custom_cell(column: dict[str, Any], obj: dict[str, Any]) -> Any:
    """One additionalPrinterColumn of obj, formatted as apiextensions-apiserver does (first match only)."""
    found = _jsonpath(column["jsonPath"]).find(obj)
    if not found:
        return None
    value, kind = found[0].value, column.get("type", "string")
    if kind == "date":
        return human_age(value) if isinstance(value, str) else None
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind in ("number", "boolean"):
        return value
    return value if isinstance(value, str) else json.dumps(value)


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _pod_status(obj: dict[str, Any]) -> str:
    for cs in _status(obj).get("containerStatuses") or []:
        state = cs.get("state") or {}
        reason = (state.get("waiting") or state.get("terminated") or {}).get("reason")
        if reason:
            return str(reason)
    return str(_status(obj).get("phase", "Pending"))


def _ports(obj: dict[str, Any]) -> str:
    ports = (obj.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _text(column: str, fn: Cell, description: str = "") -> tuple[dict[str, Any], Cell]:
    return {"name": column, "type": "string", "format": "", "priority": 0, "description": description}, fn


def _number(column: str, fn: Cell) -> tuple[dict[str, Any], Cell]:
    return {"name": column, "type": "integer", "format": "", "priority": 0, "description": ""}, fn


_BUILTIN_COLUMNS: dict[str, list[tuple[dict[str, Any], Cell]]] = {
    "Deployment": [
        _text("Ready", lambda o: f"{_status(o).get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 1)}"),
        _number("Up-to-date", lambda o: _status(o).get("updatedReplicas", 0)),
        _number("Available", lambda o: _status(o).get("availableReplicas", 0)),
    ],
    "Pod": [
        _text("Ready", lambda o: f"{sum(1 for c in _status(o).get('containerStatuses') or [] if c.get('ready'))}/"
                                 f"{len((o.get('spec') or {}).get('containers') or [])}"),
        _text("Status", _pod_status),
        _number("Restarts", lambda o: sum(c.get("restartCount", 0) for c in _status(o).get("containerStatuses") or [])),
    ],
    "Service": [
        _text("Type", lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
        _text("Cluster-IP", lambda o: (o.get("spec") or {}).get("clusterIP", "<none>")),
        _text("Port(s)", _ports),
    ],
    "Job": [
        _text("Completions", lambda o: f"{_status(o).get('succeeded', 0)}/{(o.get('spec') or {}).get('completions', 1)}"),
    ],
    "PersistentVolumeClaim": [
        _text("Status", lambda o: _status(o).get("phase", "Pending")),
        _text("Capacity", lambda o: ((_status(o).get("capacity") or {}).get("storage")) or ""),
    ],
    "HorizontalPodAutoscaler": [
        _text("Reference", lambda o: "{kind}/{name}".format(**((o.get("spec") or {}).get("scaleTargetRef") or
                                                                {"kind": "", "name": ""}))),
        _number("Replicas", lambda o: _status(o).get("currentReplicas", 0)),
    ],
    "Event": [
        _text("Type", lambda o: o.get("type", "")),
        _text("Reason", lambda o: o.get("reason", "")),
        _text("Object", lambda o: "{kind}/{name}".format(**{"kind": "", "name": "", **(o.get("involvedObject") or
                                                                                        o.get("regarding") or {})})),
        _text("Message", lambda o: o.get("message") or o.get("note") or ""),
    ],
}


def _name(obj: dict[str, Any]) -> Any:
    return obj["metadata"]["name"]


def _last_seen(obj: dict[str, Any]) -> str:
    return human_age(obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp"))


def columns(res: Resource) -> list[tuple[dict[str, Any], Cell]]:
    """Column definitions and cell functions: Name, then the CRD's printer columns, else the usual ones and Age."""
    if res.crd_name:
        custom = res.printer_columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        return [(_NAME, _name), *(({"name": c["name"], "type": c.get("type", "string"),
                                    "format": c.get("format", ""), "description": c.get("description", ""),
                                    "priority": c.get("priority", 0)}, functools.partial(custom_cell, c))
                                  for c in custom)]
    if res.kind == "Event":  # as a real server: Last Seen first, Name only with -o wide
        return [_text("Last Seen", _last_seen), *_BUILTIN_COLUMNS["Event"], ({**_NAME, "priority": 1}, _name)]
    return [(_NAME, _name), *_BUILTIN_COLUMNS.get(res.kind, []),
            (_AGE, lambda o: human_age(o["metadata"].get("creationTimestamp")))]


def _row_object(obj: dict[str, Any], include: str, version: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}", "metadata": obj["metadata"]}


def table(res: Resource, objects: list[dict[str, Any]], rv: str, include: str = "Metadata",
          version: str = "v1") -> dict[str, Any]:
    """A meta.k8s.io Table of objects (includeObject: None, Metadata or Object)."""
    cols = columns(res)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [fn(obj) for _, fn in cols]}
        if (shown := _row_object(obj, include, version)) is not None:
            row["object"] = shown
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": [definition for definition, _ in cols],
        "rows": rows,
    }
