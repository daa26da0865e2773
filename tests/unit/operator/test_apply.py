"""The write path: API errors carry their HTTP status, and callers decide on it (never on the message text)."""

from __future__ import annotations

from typing import Any

import pytest

from inferkube.operator.apply import (
    ApiError,
    KubeWriter,
    PermanentApiError,
    TransientApiError,
    _classify,
    object_path,
)

BODY = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns"}}


@pytest.mark.parametrize(("status", "transient"), [(500, True), (503, True), (409, True), (429, True), (0, True),
                                                   (422, False), (404, False), (403, False), (400, False)])
def test_errors_are_classified_by_status(status: int, transient: bool) -> None:
    error = _classify(status, "Reason", '{"kind": "Status", "message": "what the server said"}')
    assert isinstance(error, TransientApiError if transient else PermanentApiError)
    assert error.status == status and str(error) == f"{status} Reason: what the server said"


def _writer_failing_with(monkeypatch: pytest.MonkeyPatch, error: ApiError) -> KubeWriter:
    writer = KubeWriter(api_client=None)  # _call is replaced below

    def fail(*_: Any, **__: Any) -> Any:
        raise error

    monkeypatch.setattr(writer, "_call", fail)
    return writer


async def test_create_if_absent_treats_only_a_conflict_as_already_there(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _writer_failing_with(monkeypatch, TransientApiError(409, "409 Conflict: exists")).create_if_absent(
        BODY) is False
    with pytest.raises(TransientApiError) as raised:
        await _writer_failing_with(monkeypatch, TransientApiError(503, "409 in the text, 503 in fact")).create_if_absent(
            BODY)
    assert raised.value.status == 503


async def test_delete_of_an_absent_child_is_fine_anything_else_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    await _writer_failing_with(monkeypatch, PermanentApiError(404, "404 Not Found")).delete("Job", "ns", "j")
    with pytest.raises(PermanentApiError) as raised:
        await _writer_failing_with(monkeypatch, PermanentApiError(403, "404 in the text, 403 in fact")).delete(
            "Job", "ns", "j")
    assert raised.value.status == 403


async def test_a_log_that_cannot_be_read_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _writer_failing_with(monkeypatch, PermanentApiError(400, "400 container creating")).pod_log_tail(
        "ns", "p") == ""


def test_paths_come_from_the_kinds_table() -> None:
    assert object_path("Service", "ns", "s") == "/api/v1/namespaces/ns/services/s"
    assert object_path("Job", "ns") == "/apis/batch/v1/namespaces/ns/jobs"
    assert object_path("Pod", "ns", "p", "log") == "/api/v1/namespaces/ns/pods/p/log"
    assert object_path("InferenceService", "ns", "m", "status") == \
        "/apis/serving.inferkube.dev/v1alpha1/namespaces/ns/inferenceservices/m/status"
