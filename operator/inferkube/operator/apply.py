"""The one write path to the API server: server-side apply with a fixed field manager, plus status.

Calls go through the official ``kubernetes`` client (sync) in worker threads, so kopf's event loop
never blocks. Every write this operator makes goes through ``KubeWriter``; that is what the
"zero writes in steady state" tests and the benchmark count.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.rest import ApiException

from inferkube.api import contract
from inferkube.operator import kinds

UNREACHABLE = 0  # the status of an ApiError when no HTTP answer came back (refused, reset, timed out)
TRANSIENT_STATUSES = (UNREACHABLE, HTTPStatus.CONFLICT, HTTPStatus.TOO_MANY_REQUESTS)  # and every 5xx


class ApiError(Exception):
    """The API server answered a call with an HTTP error (status 0: it could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TransientApiError(ApiError):
    """The API server failed in a way worth retrying (5xx, 409 conflict, 429, timeout)."""


class PermanentApiError(ApiError):
    """The API server rejected a write for good (e.g. 422: the body is invalid)."""


@dataclass(frozen=True)
class OwnerRef:
    """The InferenceService children point to."""

    name: str
    uid: str

    def as_dict(self) -> dict[str, Any]:
        """A controller ownerReference; blockOwnerDeletion makes foreground deletion wait for children."""
        return {
            "apiVersion": kinds.INFERENCE_SERVICE.api_version,
            "kind": kinds.INFERENCE_SERVICE.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def adopt(body: dict[str, Any], owner: OwnerRef) -> dict[str, Any]:
    """body with the InferenceService as its controller owner (a new top level; nested parts shared)."""
    return {**body, "metadata": {**body["metadata"], "ownerReferences": [owner.as_dict()]}}


def object_path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    """REST path of a namespaced object (or its collection when name is None)."""
    known = kinds.KINDS[kind]
    path = f"{known.path_prefix}/namespaces/{namespace}/{known.plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def _classify(status: int, reason: Any, body: Any) -> ApiError:
    """Map an HTTP failure onto transient (retry with backoff) or permanent (report, do not retry)."""
    detail = body if isinstance(body, str) else str(reason)
    try:
        detail = json.loads(detail).get("message", detail)
    except (ValueError, AttributeError):
        pass
    message = f"{status} {reason}: {detail}"
    if status >= 500 or status in TRANSIENT_STATUSES:
        return TransientApiError(status, message)
    return PermanentApiError(status, message)


class KubeWriter:
    """Reads and writes the operator needs, as one async facade over the official client."""

    def __init__(self, api_client: kubernetes.client.ApiClient, timeout: float = 15.0) -> None:
        self._api = api_client
        self._timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, content_type: str | None = None,
              query: list[tuple[str, Any]] | None = None, raw: bool = False) -> Any:
        """One HTTP call through the client (runs in a worker thread); JSON (or text when raw) back."""
        headers = {"Accept": "text/plain" if raw else "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            params = self._api.param_serialize(
                method=method, resource_path=path, query_params=query or [], header_params=headers, body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*params[:4], _request_timeout=self._timeout)
            response.read()
        except ApiException as exc:
            raise _classify(exc.status or 0, exc.reason, exc.body) from None
        except (OSError, TimeoutError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, timed out
            raise TransientApiError(UNREACHABLE, f"API server unreachable: {exc}") from None
        data = response.data.decode("utf-8", "replace") if response.data else ""
        if not 200 <= response.status < 300:
            raise _classify(response.status, response.reason, data)
        if raw:
            return data
        return json.loads(data) if data else {}

    async def apply(self, body: dict[str, Any], field_manager: str = contract.FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply body with our field manager, forcing ownership of every field we send."""
        meta = body["metadata"]
        path = object_path(body["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", field_manager), ("force", "true")]
        return await asyncio.to_thread(
            self._call, "PATCH", path, body, "application/apply-patch+yaml", query
        )

    async def create_if_absent(self, body: dict[str, Any]) -> bool:
        """Create body unless an object of that name exists; True when created."""
        meta = body["metadata"]
        path = object_path(body["kind"], meta["namespace"])
        try:
            await asyncio.to_thread(self._call, "POST", path, body, "application/json",
                                    [("fieldManager", contract.FIELD_MANAGER)])
        except ApiError as exc:
            if exc.status == HTTPStatus.CONFLICT:  # it exists already
                return False
            raise
        return True

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the InferenceService's status subresource; the updated object."""
        path = object_path(kinds.INFERENCE_SERVICE.kind, namespace, name, "status")
        return await asyncio.to_thread(
            self._call, "PATCH", path, {"status": status}, "application/merge-patch+json"
        )

    async def post_event(self, body: dict[str, Any]) -> None:
        """Create an Event (events.event_body); a name already taken means it was posted."""
        path = object_path(kinds.EVENT.kind, body["metadata"]["namespace"])
        try:
            await asyncio.to_thread(self._call, "POST", path, body, "application/json",
                                    [("fieldManager", contract.FIELD_MANAGER)])
        except ApiError as exc:
            if exc.status != HTTPStatus.CONFLICT:
                raise

    async def patch_quota_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a (cluster-scoped) InferenceQuota's status subresource; the updated object."""
        known = kinds.INFERENCE_QUOTA
        path = f"{known.path_prefix}/{known.plural}/{name}/status"
        return await asyncio.to_thread(
            self._call, "PATCH", path, {"status": status}, "application/merge-patch+json"
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a child we no longer want (its dependents go in the background); absent is fine."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await asyncio.to_thread(self._call, "DELETE", object_path(kind, namespace, name), body, "application/json")
        except ApiError as exc:
            if exc.status != HTTPStatus.NOT_FOUND:
                raise

    async def pod_log_tail(self, namespace: str, pod: str, lines: int = 20) -> str:
        """The last lines of a pod's log ('' when it has none yet)."""
        path = object_path(kinds.POD.kind, namespace, pod, "log")
        try:
            text = await asyncio.to_thread(self._call, "GET", path, None, None, [("tailLines", lines)], True)
        except ApiError:
            return ""
        return text if isinstance(text, str) else ""
