"""Decode the protobuf request bodies kubectl 1.32's imperative commands send (`kubectl create namespace|secret|
configmap|serviceaccount`), for the few kinds those commands build. Answers stay JSON (kubectl accepts both).

Written here because no Python package ships Kubernetes' protobuf messages. The wire format is decoded by hand;
the field numbers are those of Kubernetes' generated.proto files, only for the fields these kinds have.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# message -> field number -> (JSON name, type); types: string, bytes, int64, bool, map:string, map:bytes,
# strings (repeated string), msg:NAME, msgs:NAME (repeated message).
_MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    "Unknown": {1: ("typeMeta", "msg:TypeMeta"), 2: ("raw", "bytes"), 3: ("contentEncoding", "string"),
                4: ("contentType", "string")},
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "ObjectMeta": {1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
                   6: ("resourceVersion", "string"), 11: ("labels", "map:string"), 12: ("annotations", "map:string"),
                   14: ("finalizers", "strings")},
    "LocalObjectReference": {1: ("name", "string")},
    "ObjectReference": {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string")},
    "Namespace": {1: ("metadata", "msg:ObjectMeta"), 2: ("spec", "msg:NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "strings")},
    "Secret": {1: ("metadata", "msg:ObjectMeta"), 2: ("data", "map:bytes"), 3: ("type", "string"),
               4: ("stringData", "map:string"), 5: ("immutable", "bool")},
    "ConfigMap": {1: ("metadata", "msg:ObjectMeta"), 2: ("data", "map:string"), 3: ("binaryData", "map:bytes"),
                  4: ("immutable", "bool")},
    "ServiceAccount": {1: ("metadata", "msg:ObjectMeta"), 2: ("secrets", "msgs:ObjectReference"),
                       3: ("imagePullSecrets", "msgs:LocalObjectReference"),
                       4: ("automountServiceAccountToken", "bool")},
}
KINDS = {"Namespace", "Secret", "ConfigMap", "ServiceAccount"}


class Unsupported(Exception):
    """A protobuf body the emulator cannot decode (HTTP 415)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise Unsupported("truncated protobuf varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a message: varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            out.append((number, data[pos:pos + size]))
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise Unsupported(f"protobuf wire type {wire} is not supported")
    return out


def _value(kind: str, raw: int | bytes) -> Any:
    if kind == "string":
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    if kind == "bytes":
        return raw
    if kind == "bool":
        return bool(raw)
    if kind == "int64":
        return int(raw) if isinstance(raw, int) else 0
    return decode_message(kind.split(":", 1)[1], raw if isinstance(raw, bytes) else b"")


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    """One message as the dict its JSON form would be (bytes fields stay bytes until encode_bytes)."""
    spec = _MESSAGES[name]
    out: dict[str, Any] = {}
    for number, raw in _fields(data):
        if number not in spec:
            continue  # unknown fields are skipped, as protobuf does (e.g. the zero creationTimestamp)
        key, kind = spec[number]
        if kind.startswith("map:"):
            entry = dict(_fields(raw if isinstance(raw, bytes) else b""))
            value = entry.get(2, b"")
            out.setdefault(key, {})[_value("string", entry.get(1, b""))] = (
                base64.b64encode(value).decode() if kind == "map:bytes" and isinstance(value, bytes)
                else _value("string", value))
        elif kind == "strings" or kind.startswith("msgs:"):
            out.setdefault(key, []).append(_value("string" if kind == "strings" else "msg:" + kind[5:], raw))
        elif (value := _value(kind, raw)) not in ("", 0, False, {}):  # Go's omitempty: zero values are absent
            out[key] = value
    return out


def decode(body: bytes) -> dict[str, Any]:
    """A `k8s\\0`-framed protobuf object as its JSON dict; raises Unsupported for kinds not listed above."""
    if not body.startswith(MAGIC):
        raise Unsupported("protobuf body without the k8s envelope")
    unknown = decode_message("Unknown", body[len(MAGIC):])
    kind = unknown.get("typeMeta", {}).get("kind", "")
    if kind not in KINDS:
        raise Unsupported(f"the emulator decodes protobuf only for {sorted(KINDS)}, not {kind or 'this body'}; "
                          "send JSON (kubectl apply -f, or kubectl create ... --dry-run=client -o yaml | kubectl apply -f -)")
    obj = {**unknown["typeMeta"], **decode_message(kind, unknown.get("raw", b""))}
    if kind == "Secret":
        obj.setdefault("type", "Opaque")  # the API server's default
    return obj
