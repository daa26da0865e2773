"""A tiny random-weight Llama, built locally, so the real engine runs without any download.

Its output is noise: the weights are random. It exists for demos, tests and benchmarks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

BUILTIN_PREFIX = "builtin:"
TINY_NAME = "tiny"
TINY_EMBED_NAME = "tiny-embed"
# Bump when the recipe changes so cached copies are rebuilt.
TINY_RECIPE_VERSION = "1"
_MARKER = ".inferkube-tiny.json"
_SEED = 1234
_VOCAB_SIZE = 512

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | map(attribute='text') | join('') %}{% endif %}"
    "<|{{ message['role'] }}|>\n{{ text }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes and restarts them when they fail.",
    "A large language model predicts the next token from the previous ones.",
    "Hello world! How are you today? I am fine, thank you.",
    "Once upon a time there was a tiny model that produced only noise.",
    "def main():\n    print('hello')\n    return 0\n",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "Operators reconcile desired state with actual state, again and again.",
    "Rate limits protect shared services from a single noisy tenant.",
    "{\"name\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"ok\": true}}",
]


def default_tiny_model_dir() -> Path:
    """Return the cache directory used for `builtin:tiny` (override with INFERKUBE_TINY_MODEL_DIR)."""
    override = os.environ.get("INFERKUBE_TINY_MODEL_DIR")
    if override:
        return Path(override)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "inferkube" / f"tiny-llama-v{TINY_RECIPE_VERSION}"


def resolve_model(model: str) -> str:
    """Map `builtin:tiny` to a built local directory; return any other model reference unchanged."""
    if not model.startswith(BUILTIN_PREFIX):
        return model
    name = model[len(BUILTIN_PREFIX):]
    if name == TINY_EMBED_NAME:
        return str(build_tiny_embedding_model(default_tiny_model_dir().with_name(
            f"tiny-embed-v{TINY_RECIPE_VERSION}")))
    if name != TINY_NAME:
        raise ValueError(f"unknown builtin model {model!r}; 'builtin:{TINY_NAME}' and "
                         f"'builtin:{TINY_EMBED_NAME}' exist")
    return str(build_tiny_model(default_tiny_model_dir()))


def _is_built(dest: Path) -> bool:
    marker = dest / _MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("version") == TINY_RECIPE_VERSION
    except (OSError, ValueError):
        return False


def _train_tokenizer(out: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_CORPUS * 4, vocab_size=_VOCAB_SIZE, min_frequency=2,
                            special_tokens=_SPECIAL_TOKENS, show_progress=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=_SPECIAL_TOKENS[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 2048
    fast.save_pretrained(str(out))


def _write_model(out: Path, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, tie_word_embeddings=False,
        dtype="bfloat16",
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(_SEED)
        model = LlamaForCausalLM(config).to(torch.bfloat16)  # type: ignore[arg-type]  # transformers types .to() as its device-map wrapper; a dtype is valid
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(str(out), safe_serialization=True)


def _write_encoder(out: Path, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> None:
    """A BERT-shaped encoder that behaves like a bag of tokens: position and type embeddings and the residual
    branches are zeroed, so a mean-pooled embedding depends only on which tokens a text has (texts with
    the same words in another order are identical, texts sharing few words are far apart)."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512, pad_token_id=pad_id)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(_SEED)
        model = BertModel(config)
    finally:
        torch.random.set_rng_state(state)
    zeroed = ("embeddings.position_embeddings.", "embeddings.token_type_embeddings.", "output.dense.")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in zeroed):  # output.dense: both residual branches of each layer
                param.zero_()
    model.save_pretrained(str(out), safe_serialization=True)


def build_tiny_model(dest: Path) -> Path:
    """Build (once) a tiny random Llama with tokenizer and chat template in `dest`; return `dest`."""
    return _build(Path(dest), _write_model)


def build_tiny_embedding_model(dest: Path) -> Path:
    """Build (once) a tiny random BERT-style encoder (for the semantic response cache's tests)."""
    return _build(Path(dest), _write_encoder)


def _build(dest: Path, write: Callable[[Path, int, int, int, int], None]) -> Path:
    if _is_built(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=dest.parent))
    try:
        _train_tokenizer(work)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(work))
        write(work, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
        (work / _MARKER).write_text(json.dumps({"version": TINY_RECIPE_VERSION, "seed": _SEED}))
        if _is_built(dest):
            return dest
        if dest.exists():
            shutil.rmtree(dest)
        try:
            work.rename(dest)
        except OSError:
            # Another process finished first: keep its copy if it is complete.
            if not _is_built(dest):
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dest
