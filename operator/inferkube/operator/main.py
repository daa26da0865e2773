"""``inferkube-operator``: run the controller in the cluster or, for development, against a kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf


def build_parser() -> argparse.ArgumentParser:
    """Arguments of inferkube-operator."""
    parser = argparse.ArgumentParser(prog="inferkube-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", default=True,
                       help="watch InferenceServices in every namespace (default)")
    scope.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable)")
    parser.add_argument("--settings", help="operator settings YAML (default: $INFERKUBE_OPERATOR_CONFIG)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="kopf health endpoint for the liveness probe ('' to disable)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="text (default) or one JSON object per line (kopf's JSON format, with the object's namespace/name)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start the kopf controller with inferkube's handlers; returns when it stops."""
    args = build_parser().parse_args(argv)
    if args.settings:
        os.environ["INFERKUBE_OPERATOR_CONFIG"] = args.settings
    import inferkube.operator.handlers  # noqa: F401  (registers the handlers)

    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=args.verbose, log_format=log_format)  # kopf installs the log handler; no second basicConfig
    if not args.verbose:
        # kopf logs "Handler ... succeeded" for every watch event; problems still show as warnings
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            liveness_endpoint=args.liveness or None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
