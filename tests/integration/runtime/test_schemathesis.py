"""Property-based requests generated from the server's own OpenAPI document: never a 5xx."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.runtime.conftest import MAIN_KEY, SERVED_NAME, RuntimeServer

pytestmark = pytest.mark.engine
MAX_GENERATED_TOKENS = 8
MAX_EXAMPLES = 60
# Text a fuzzer should try and schema-driven generation never does: lone surrogates and control characters.
HOSTILE_TEXT = st.text(st.one_of(st.characters(categories=("Cs",)), st.characters(categories=("Cc",)),
                                 st.characters()), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def api_schema(runtime_server: RuntimeServer):
    """The runtime's OpenAPI document, loaded over HTTP from the real server."""
    return schemathesis.openapi.from_url(runtime_server.base_url + "/openapi.json")


def _bound_generation(body: object) -> None:
    """Keep generated requests short to run (long generations are not what this test is about)."""
    if not isinstance(body, dict):
        return
    body["model"] = SERVED_NAME  # unknown models are a 404 path tested elsewhere; reach the engine here
    if not {"messages", "prompt", "prompt_embeds"} & set(body):
        body["prompt"] = "hello"  # the schema cannot say "prompt or prompt_embeds is required"
    for key in ("max_tokens", "max_completion_tokens", "min_tokens"):
        if isinstance(body.get(key), int) and body[key] > MAX_GENERATED_TOKENS:
            body[key] = MAX_GENERATED_TOKENS
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = MAX_GENERATED_TOKENS


def _check(case: schemathesis.Case, seen: Counter) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {MAIN_KEY}"}
    _bound_generation(case.body)
    response = case.call(timeout=60)
    seen[(case.path, response.status_code // 100)] += 1
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"message", "type", "param", "code"}


def test_generated_requests_never_get_5xx(api_schema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    seen: Counter = Counter()
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def run(case: schemathesis.Case) -> None:
            _check(case, seen)

        run()
    # The generated inputs really reached the engine, not only the validators.
    assert seen[("/v1/completions", 2)] > 0 and seen[("/v1/chat/completions", 2)] > 0, seen


def _string_slots(value: object, depth: int = 0) -> list[tuple[object, object]]:
    """(container, key) of every string in the body, a few levels deep, plus the prompt/messages slots."""
    slots: list[tuple[object, object]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(item, str):
            slots.append((value, key))
        elif depth < 3:
            slots.extend(_string_slots(item, depth + 1))
    return slots


def test_hostile_strings_never_get_5xx(api_schema) -> None:
    """Lone surrogates and control characters in any string field (model, prompt, content, stop, ...)."""
    seen: Counter = Counter()
    for path in ("/v1/chat/completions", "/v1/completions"):
        operation = api_schema[path]["POST"]

        @given(case=operation.as_strategy(), text=HOSTILE_TEXT, pick=st.integers(min_value=0), stop=st.booleans())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def run(case: schemathesis.Case, text: str, pick: int, stop: bool) -> None:
            _bound_generation(case.body)
            if isinstance(case.body, dict):
                if stop:
                    case.body["stop"] = [text]
                slots = _string_slots(case.body)
                container, key = slots[pick % len(slots)]
                container[key] = text  # type: ignore[index]  # a dict or a list, both indexable by their key
            _check(case, seen)

        run()
    assert sum(n for (_, cls), n in seen.items() if cls == 4) > 0, seen  # the hostile inputs were refused
