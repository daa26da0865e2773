"""Byte bounds on token counts hold for the real (tiny, byte-level BPE) tokenizer, and the shape of a request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from inferkube.runtime.engine import token_bounds_of
from inferkube.runtime.errors import ApiError
from inferkube.runtime.shape import peek_request
from inferkube.runtime.tinymodel import build_tiny_model

TEXTS = ["", "hello world", "a" * 500, "  \n\t  ", "日本語のテキスト", "emoji 🎉🎉🎉 and ümlauts", "x\u0000y\u001fz",
         "def f(x):\n    return x ** 2\n" * 20, "-" * 300, "ab" * 1000]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tok") / "m"))


def test_token_count_lies_between_the_byte_bounds(tokenizer) -> None:
    bounds = token_bounds_of(tokenizer)
    assert bounds.max_token_bytes > 1
    for text in TEXTS:
        size = len(text.encode("utf-8"))
        count = len(tokenizer.encode(text, add_special_tokens=True))
        assert bounds.lower(size) <= count <= bounds.upper(size), (text[:20], size, count)


def test_shape_counts_sequences_and_rejects_lone_surrogates(tokenizer) -> None:
    bounds = token_bounds_of(tokenizer)
    shape = peek_request(json.dumps({"prompt": ["a", "b", [1, 2]], "n": 3}).encode(), False, bounds)
    assert shape.sequences == 9 and shape.prompts[2].lower == shape.prompts[2].upper == 2
    with pytest.raises(ApiError) as exc:
        peek_request(json.dumps({"messages": [{"role": "user", "content": "a\ud800"}]}).encode(), True, bounds)
    assert exc.value.status == 400 and exc.value.param == "messages"
    with pytest.raises(ApiError):  # raw UTF-8-encoded surrogate bytes are not valid UTF-8 either
        peek_request(b'{"prompt": "a\xed\xa0\x80"}', False, bounds)
    ok = peek_request(json.dumps({"prompt": "\U0001f389"}).encode(), False, bounds)  # a valid pair
    assert ok.prompts[0].upper >= 4


def test_tiny_model_is_byte_level(tokenizer, tmp_path: Path) -> None:
    assert "ByteLevel" in repr(tokenizer.backend_tokenizer.decoder)
