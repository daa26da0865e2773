"""The ``inferkube`` command: render children, validate objects, generate the CRDs and monitoring files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from inferkube.api import contract
from inferkube.operator.crd import rendered_crds, write_crds
from inferkube.operator.inputs import Observed, SpecError
from inferkube.operator.names import cache_key
from inferkube.operator.parse import parse_service
from inferkube.operator.render import render_children
from inferkube.operator.settings import SettingsError, load_settings
from inferkube.operator.validation import validate_object


class _NoAliasDumper(yaml.SafeDumper):
    """Plain YAML for kubectl: repeated dicts are written out, never as &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class CliError(Exception):
    """A problem to print as one clear line, exit code 1."""


def _documents(path: str) -> Iterator[tuple[int, Any]]:
    """YAML documents of a file ('-' is standard input), numbered from 1, empty ones skipped."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML: {exc}") from None
    numbered = [(i, d) for i, d in enumerate(docs, 1) if d is not None]
    if not numbered:
        raise CliError(f"{path}: no YAML documents")
    return iter(numbered)


def _services(path: str, kinds: tuple[str, ...] = (contract.KIND,)) -> Iterator[tuple[int, dict[str, Any]]]:
    """Documents of the given kinds (default InferenceService); anything else is an error naming the document."""
    for index, doc in _documents(path):
        if not isinstance(doc, dict) or doc.get("kind") not in kinds:
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            raise CliError(f"{path}: document {index} is {kind!r}, expected kind {' or '.join(kinds)}")
        yield index, doc


def cmd_validate(args: argparse.Namespace) -> int:
    """Print every problem of every InferenceService and InferenceQuota in the file; exit 1 when there is one."""
    failed = False
    for index, doc in _services(args.file, (contract.KIND, contract.QUOTA_KIND)):
        name = (doc.get("metadata") or {}).get("name", f"document {index}")
        problems = validate_object(doc)
        for problem in problems:
            print(f"{args.file}: {name}: {problem}", file=sys.stderr)
        if problems:
            failed = True
        else:
            print(f"{args.file}: {name}: valid")
    return 1 if failed else 0


def cmd_render(args: argparse.Namespace) -> int:
    """Print the children of every InferenceService in the file as YAML documents."""
    try:
        settings = load_settings(Path(args.settings) if args.settings else None)
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    out: list[dict[str, Any]] = []
    for _index, doc in _services(args.file):
        problems = validate_object(doc)
        if problems:
            name = (doc.get("metadata") or {}).get("name", "?")
            raise CliError("; ".join(f"{name}: {p}" for p in problems))
        name = doc["metadata"]["name"]
        try:
            spec, meta = parse_service(doc, default_namespace=args.namespace)
            observed = Observed(
                serving_cache_key=None if args.cache_pending else cache_key(spec),
                monitoring_api=not args.no_monitoring,
                alerting_api=not args.no_monitoring,
                keda_api=not args.no_keda,
            )
            out += [child.body for child in render_children(spec, meta, settings, observed)]
        except SpecError as exc:
            raise CliError(f"{name}: {exc}") from None
    sys.stdout.write(yaml.dump_all(out, Dumper=_NoAliasDumper, sort_keys=False, width=1000))
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    """Print the generated CRDs (InferenceService, InferenceQuota), or write them into a directory."""
    if args.output_dir:
        for path in write_crds(Path(args.output_dir)):
            print(f"wrote {path}")
    else:
        sys.stdout.write("---\n".join(rendered_crds().values()))
    return 0


def cmd_monitoring(args: argparse.Namespace) -> int:
    """Write the prometheus-adapter rules and the Grafana dashboard into a directory."""
    from inferkube.operator.monitoring.bundle import write_monitoring  # needs the `monitoring` extra

    for path in write_monitoring(Path(args.output_dir)):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``inferkube``."""
    parser = argparse.ArgumentParser(prog="inferkube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print every child of an InferenceService as YAML (like helm template)")
    render.add_argument("-f", "--file", required=True, help="InferenceService YAML file ('-' for stdin)")
    render.add_argument("-n", "--namespace", default="default", help="namespace when the object names none")
    render.add_argument("--settings", help="operator settings YAML (accelerator profiles, images)")
    render.add_argument("--cache-pending", action="store_true",
                        help="render the state before the model cache is filled (no Deployment yet)")
    render.add_argument("--no-monitoring", action="store_true", help="as if the Prometheus Operator API were absent")
    render.add_argument("--no-keda", action="store_true", help="as if the KEDA API were absent")
    render.set_defaults(func=cmd_render)
    validate = sub.add_parser("validate", help="check InferenceServices and InferenceQuotas against the CRD schemas and CEL rules")
    validate.add_argument("-f", "--file", required=True, help="InferenceService / InferenceQuota YAML file ('-' for stdin)")
    validate.set_defaults(func=cmd_validate)
    crd = sub.add_parser("crd", help="print the generated CustomResourceDefinitions")
    crd.add_argument("-o", "--output-dir", help="write crds/*.yaml into this directory instead")
    crd.set_defaults(func=cmd_crd)
    monitoring = sub.add_parser("monitoring", help="write prometheus-adapter rules and the Grafana dashboard")
    monitoring.add_argument("-o", "--output-dir", required=True, help="directory, e.g. manifests/monitoring")
    monitoring.set_defaults(func=cmd_monitoring)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``inferkube``: clear one-line errors and exit codes, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
