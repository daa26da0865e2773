"""Opt-in semantic matching: embed the last user message, reuse an answer whose embedding is close enough.

Only among requests equal in everything but that message's text (model, revision, route, scope, system
prompt, history, sampling parameters: see `keys.semantic_partition`). The encoder runs on the CPU in
this process (mean-pooled, L2-normalised hidden states of a sentence-transformers style model, loaded
with transformers), in a worker thread so the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from typing import Any, Protocol

import numpy as np

DEFAULT_THRESHOLD = 0.95
INDEX_CAP = 256  # newest candidates kept per partition; a lookup compares against all of them
_MAX_TEXT_TOKENS = 256


class Embedder(Protocol):
    """Turns a text into a unit vector."""

    def embed(self, text: str) -> np.ndarray:
        """The L2-normalised embedding of `text`."""


class TransformersEmbedder:
    """A transformers encoder (e.g. a sentence-transformers checkpoint) with mean pooling, on the CPU."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self._tokenizer: Any = None
        self._model: Any = None
        self._lock = threading.Lock()  # one forward pass at a time: the model is not re-entrant

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        from inferkube.runtime.tinymodel import resolve_model

        path = resolve_model(self.model_dir)
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()

    def embed(self, text: str) -> np.ndarray:
        """Mean of the last hidden states over the real tokens, scaled to length 1 (loads on first use)."""
        import torch

        with self._lock, torch.inference_mode():
            if self._model is None:
                self._load()
            enc = self._tokenizer(text, truncation=True, max_length=_MAX_TEXT_TOKENS, return_tensors="pt")
            hidden = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return unit(pooled[0].float().numpy())


def unit(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to length 1 (float32)."""
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def encode_member(vector: np.ndarray, key: str) -> bytes:
    """One index member: the vector's dimension, its float32 values, then the exact key it points to."""
    v = np.asarray(vector, dtype=np.float32)
    return struct.pack("<I", v.size) + v.tobytes() + key.encode()


def decode_member(member: bytes) -> tuple[np.ndarray, str]:
    """(vector, exact key) of an index member."""
    (dim,) = struct.unpack_from("<I", member)
    end = 4 + 4 * dim
    return np.frombuffer(member[4:end], dtype=np.float32), member[end:].decode()


def last_user_text(canonical: dict[str, Any]) -> tuple[int, str] | None:
    """(index, text) of the last message when it is a user message made of text only, else None."""
    messages = canonical.get("messages") or []
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    content = messages[-1].get("content")
    if isinstance(content, str):
        return len(messages) - 1, content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return len(messages) - 1, "".join(str(p.get("text", "")) for p in content)
    return None


class SemanticMatcher:
    """Embeds texts off the event loop and picks the closest stored candidate above the threshold."""

    def __init__(self, embedder: Embedder, threshold: float = DEFAULT_THRESHOLD, cap: int = INDEX_CAP) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("similarity threshold must be in (0, 1]")
        self.embedder = embedder
        self.threshold = threshold
        self.cap = cap

    async def vector(self, text: str) -> np.ndarray:
        """The embedding of `text`, computed in a worker thread."""
        return await asyncio.to_thread(self.embedder.embed, text)

    def best(self, query: np.ndarray, members: list[bytes]) -> tuple[str, float] | None:
        """(exact key, cosine) of the most similar member at or above the threshold, else None."""
        best: tuple[str, float] | None = None
        for member in members:
            try:
                vector, key = decode_member(member)
            except (struct.error, UnicodeDecodeError):
                continue
            if vector.shape != query.shape:
                continue
            similarity = float(np.dot(vector, query))
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = (key, similarity)
        return best
