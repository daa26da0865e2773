"""The built-in tiny model: built locally, deterministic, cached, with a working tokenizer and template."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer

from inferkube.runtime.tinymodel import build_tiny_model, resolve_model


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_builds_a_small_llama_with_tokenizer_and_chat_template(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "a")
    cfg = AutoConfig.from_pretrained(str(d))
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == ("llama", 128, 2, 2)
    assert (d / "model.safetensors").stat().st_size < 2_000_000
    tok = AutoTokenizer.from_pretrained(str(d))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|user|>" in text and text.endswith("<|assistant|>\n")
    assert tok.decode(tok("hello world", add_special_tokens=False).input_ids) == "hello world"

    # Deterministic across builds, and cached: a second call does not rebuild.
    assert _digest(build_tiny_model(tmp_path / "b")) == _digest(d)
    start = time.monotonic()
    assert build_tiny_model(d) == d
    assert time.monotonic() - start < 0.5


def test_builtin_reference_resolves_to_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERKUBE_TINY_MODEL_DIR", str(tmp_path / "cache"))
    assert resolve_model("builtin:tiny") == str(tmp_path / "cache")
    assert resolve_model("/models/x") == "/models/x"
    with pytest.raises(ValueError, match="builtin"):
        resolve_model("builtin:huge")
