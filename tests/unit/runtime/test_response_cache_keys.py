"""Cache keys and cacheability rules, on vLLM's own request models."""

from __future__ import annotations

import pytest

from inferkube.runtime.context import CHAT, COMPLETION
from inferkube.runtime.response_cache.keys import (
    canonical_request,
    exact_key,
    model_revision,
    scope_of,
    semantic_partition,
)
from inferkube.runtime.response_cache.policy import (
    REASON_LOGPROBS,
    REASON_N,
    REASON_NO_CACHE,
    REASON_NO_STORE,
    REASON_SAMPLED,
    REASON_TOKEN_DETAILS,
    REASON_TOOLS,
    classify,
)
from inferkube.runtime.validation import request_model

MSG = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def chat(**kw):
    return request_model(CHAT).model_validate({"model": "tiny", "messages": MSG, **kw})


def key(req, model="tiny", revision="r1", route=CHAT, scope="tenant:a") -> str:
    return exact_key(model, revision, route, scope, canonical_request(req))


def test_key_ignores_key_order_omitted_defaults_and_output_neutral_fields() -> None:
    base = key(chat(temperature=0, max_tokens=5))
    same = request_model(CHAT).model_validate(
        {"max_tokens": 5, "temperature": 0.0, "messages": MSG, "model": "tiny", "n": 1, "top_p": None,
         "stream": True, "stream_options": {"include_usage": True}, "user": "bob", "request_id": "abc"})
    assert key(same) == base
    assert key(chat(temperature=0, max_tokens=5)) == base  # vLLM's random request_id is not in the key


@pytest.mark.parametrize("change", [
    {"max_tokens": 6}, {"stop": ["x"]}, {"messages": [{"role": "user", "content": "hi!"}]},
    {"seed": 1}, {"response_format": {"type": "json_object"}}, {"top_k": 3},
])
def test_anything_that_changes_the_output_changes_the_key(change: dict) -> None:
    assert key(chat(**{"temperature": 0, "max_tokens": 5, **change})) != key(chat(temperature=0, max_tokens=5))


def test_model_revision_route_and_scope_are_in_the_key() -> None:
    req = chat(temperature=0)
    assert len({key(req), key(req, revision="r2"), key(req, route=COMPLETION), key(req, scope="tenant:b"),
                key(req, model="other")}) == 5
    assert scope_of("tenant", "a") != scope_of("tenant", "b")
    assert scope_of("shared", "a") == scope_of("shared", "b")


def test_semantic_partition_ignores_only_the_last_user_text() -> None:
    def part(messages, **kw):
        c = canonical_request(request_model(CHAT).model_validate({"model": "tiny", "messages": messages,
                                                                  "temperature": 0, **kw}))
        return semantic_partition("tiny", "r", CHAT, "shared", c, len(messages) - 1)

    sys = {"role": "system", "content": "be brief"}
    assert part([sys, {"role": "user", "content": "a"}]) == part([sys, {"role": "user", "content": "b"}])
    assert part([sys, {"role": "user", "content": "a"}]) != part([{"role": "system", "content": "x"},
                                                                   {"role": "user", "content": "a"}])
    assert part([{"role": "user", "content": "a"}]) != part([{"role": "user", "content": "a"}], max_tokens=3)


def test_model_revision_follows_the_weights_in_a_local_directory(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"layers": 2}')
    first = model_revision(str(tmp_path), None)
    assert model_revision(str(tmp_path), None) == first
    (tmp_path / "config.json").write_text('{"layers": 3}')
    assert model_revision(str(tmp_path), None) != first
    assert model_revision("org/model", "abc") != model_revision("org/model", "def")


@pytest.mark.parametrize(("body", "reason"), [
    ({}, REASON_SAMPLED),                               # unset temperature = the model's default: sampling
    ({"temperature": 0.7}, REASON_SAMPLED),
    ({"temperature": 0, "n": 2}, REASON_N),
    ({"temperature": 0, "logprobs": True, "top_logprobs": 2}, REASON_LOGPROBS),
    ({"temperature": 0, "prompt_logprobs": 1}, REASON_LOGPROBS),
    ({"temperature": 0, "tools": [TOOL], "tool_choice": "auto"}, REASON_TOOLS),
    ({"temperature": 0, "return_token_ids": True}, REASON_TOKEN_DETAILS),
])
def test_requests_whose_answer_is_not_reproducible_bypass(body: dict, reason: str) -> None:
    rules = classify(chat(**body), None)
    assert (rules.lookup, rules.store, rules.reason) == (False, False, reason)


@pytest.mark.parametrize("body", [{"temperature": 0}, {"seed": 7, "temperature": 0.9},
                                  {"seed": 7, "temperature": 0.9, "n": 2},
                                  {"temperature": 0, "tools": [TOOL], "tool_choice": "none"}])
def test_greedy_or_seeded_requests_are_cached(body: dict) -> None:
    rules = classify(chat(**body), None)
    assert rules.lookup and rules.store and rules.reason is None


def test_completion_logprobs_bypass() -> None:
    req = request_model(COMPLETION).model_validate({"model": "tiny", "prompt": "x", "temperature": 0,
                                                    "logprobs": 2})
    assert classify(req, None).reason == REASON_LOGPROBS


def test_cache_control_opts_out_like_an_http_cache() -> None:
    req = chat(temperature=0)
    no_cache = classify(req, "max-age=0, No-Cache")
    assert (no_cache.lookup, no_cache.store, no_cache.reason) == (False, True, REASON_NO_CACHE)
    no_store = classify(req, "no-store")
    assert (no_store.lookup, no_store.store, no_store.reason) == (False, False, REASON_NO_STORE)
    assert classify(req, "max-age=60").lookup
