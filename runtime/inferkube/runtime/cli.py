"""`inferkube-runtime`: `serve` (the OpenAI-compatible server) and `download` (fill the model cache)."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

_FLAGS: list[tuple[str, dict]] = [
    ("--model", {"help": "model directory, Hugging Face name, or builtin:tiny (a tiny random Llama)"}),
    ("--served-model-name", {"help": "name clients send as `model` (default: --model)"}),
    ("--host", {"help": "listen address (default 0.0.0.0)"}),
    ("--port", {"type": int, "help": "listen port (default 8000)"}),
    ("--dtype", {"help": "weights/activations dtype for vLLM (default auto)"}),
    ("--max-model-len", {"type": int, "help": "context length (default: the model's)"}),
    ("--tensor-parallel-size", {"type": int, "help": "GPUs per replica (default 1)"}),
    ("--gpu-memory-utilization", {"type": float, "help": "fraction of GPU memory for vLLM"}),
    ("--enable-prefix-caching", {"action": argparse.BooleanOptionalAction, "help": "vLLM prefix caching"}),
    ("--max-num-seqs", {"type": int, "help": "sequences the engine batches at once"}),
    ("--warmup", {"action": argparse.BooleanOptionalAction, "help": "warm-up request before ready"}),
    ("--log-level", {"help": "debug, info, warning, error"}),
    ("--log-format", {"choices": ["text", "json"], "help": "text (default) or JSON lines, one per request"}),
    ("--max-in-flight", {"type": int, "help": "requests handed to the engine at once (default 256)"}),
    ("--max-queued", {"type": int, "help": "requests waiting for a slot before 429 (default 256)"}),
    ("--drain-timeout", {"type": float, "help": "seconds given to in-flight work on SIGTERM (default 120)"}),
    ("--tenants-file", {"help": "YAML file of API keys and per-tenant limits (reloaded when it changes)"}),
    ("--tenant-policy-file", {"help": "tenant policy of the InferenceQuotas selecting this service (reloaded)"}),
    ("--reload-interval", {"type": float, "help": "seconds between checks of the tenants/policy files (default 1)"}),
    ("--scheduling-policy", {"choices": ["fcfs", "priority"],
                             "help": "fcfs (default): FIFO admission; priority: priority + fair share, vLLM priority"}),
    ("--rate-limit-backend", {"choices": ["memory", "redis"], "help": "where budgets live (default memory)"}),
    ("--redis-url", {"help": "redis://host:port/db for --rate-limit-backend redis"}),
    ("--default-requests-per-minute", {"type": int, "help": "limit for tenants without their own"}),
    ("--default-tokens-per-minute", {"type": int, "help": "limit for tenants without their own"}),
    ("--max-tokens-cap", {"type": int, "help": "largest max_tokens accepted (default 4096)"}),
    ("--max-n", {"type": int, "help": "largest n accepted (default 16)"}),
    ("--max-stop-sequences", {"type": int, "help": "longest stop list accepted (default 4, vLLM's limit)"}),
    ("--max-connections", {"type": int, "help": "open connections at most, beyond: 503 (default 1024)"}),
    ("--header-timeout", {"type": float, "help": "seconds to send a request head (default 10)"}),
    ("--body-timeout", {"type": float, "help": "seconds to send a request body (default 30)"}),
    ("--keep-alive-timeout", {"type": float, "help": "seconds an idle connection stays open (default 5)"}),
    ("--max-body-bytes", {"type": int, "help": "largest request body (default 1048576)"}),
    ("--model-revision", {"help": "revision of the served weights (response-cache keys include it)"}),
    ("--response-cache", {"action": argparse.BooleanOptionalAction,
                          "help": "cache answers of deterministic requests (default off)"}),
    ("--response-cache-backend", {"choices": ["memory", "redis"],
                                  "help": "memory (per replica, default) or redis (shared; --redis-url)"}),
    ("--response-cache-ttl", {"type": float, "help": "seconds an answer is kept (default 600)"}),
    ("--response-cache-max-entries", {"type": int, "help": "entries kept in memory (default 10000)"}),
    ("--response-cache-max-bytes", {"type": int, "help": "bytes kept in memory (default 268435456)"}),
    ("--response-cache-scope", {"choices": ["tenant", "shared"],
                                "help": "tenant: per-tenant entries (default); shared: all callers"}),
    ("--response-cache-semantic-model", {"help": "encoder for semantic matching (default: exact only)"}),
    ("--response-cache-similarity-threshold", {"type": float,
                                               "help": "cosine a semantic match needs (default 0.95)"}),
]


def build_serve_parser() -> argparse.ArgumentParser:
    """The `serve` flags; every default is SUPPRESS so unset flags fall back to INFERKUBE_* / defaults."""
    parser = argparse.ArgumentParser(
        prog="inferkube-runtime serve", argument_default=argparse.SUPPRESS,
        description="Serve a model over an OpenAI-compatible API. Extra vLLM engine arguments go after `--`.")
    for flag, kwargs in _FLAGS:
        parser.add_argument(flag, **kwargs)
    fail = parser.add_mutually_exclusive_group()
    fail.add_argument("--rate-limit-fail-open", dest="rate_limit_fail_open", action="store_const", const=True,
                      help="serve when the rate-limit backend is unreachable (default)")
    fail.add_argument("--rate-limit-fail-closed", dest="rate_limit_fail_open", action="store_const",
                      const=False, help="refuse (503) when the rate-limit backend is unreachable")
    return parser


def parse_serve_args(argv: list[str]) -> dict:
    """Split `argv` at `--` and return the settings given on the command line."""
    if "--" in argv:
        cut = argv.index("--")
        ours, engine_args = argv[:cut], argv[cut + 1:]
    else:
        ours, engine_args = argv, None
    values = vars(build_serve_parser().parse_args(ours))
    if engine_args is not None:
        values["engine_args"] = engine_args
    return values


def serve_main(argv: list[str]) -> int:
    """`inferkube-runtime serve ...`."""
    from inferkube.runtime.settings import RuntimeSettings

    values = parse_serve_args(argv)
    try:
        settings = RuntimeSettings(**values)
    except ValidationError as exc:
        print(f"inferkube-runtime serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    from inferkube.runtime.server import exit_now, serve

    exit_now(serve(settings))
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `inferkube-runtime` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: inferkube-runtime {serve,download} [options]\n\n"
              "  serve     serve a model over an OpenAI-compatible API (see `serve --help`)\n"
              "  download  fill the model cache directory (see `download --help`)")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        return serve_main(rest)
    if command == "download":
        from inferkube.runtime.download.cli import main as download_main

        return download_main(rest)
    print(f"inferkube-runtime: unknown command {command!r} (use serve or download)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
