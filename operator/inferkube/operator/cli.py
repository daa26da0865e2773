"""The ``inferkube`` command: render children, validate objects, generate the CRDs and monitoring files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds
from inferkube.operator.crd import rendered_crds, write_crds
from inferkube.operator.inputs import Observed, SpecError
from inferkube.operator.names import cache_key
from inferkube.operator.offline import render_offline
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


# render reads Namespaces for their labels only (a quota's namespaceSelector), as the operator's watch does
ACCEPTED_KINDS = (contract.KIND, contract.QUOTA_KIND, kinds.NAMESPACE.kind)


@dataclass(frozen=True)
class Document:
    """One object of the input files, and where it is (for messages)."""

    path: str
    index: int
    body: dict[str, Any]

    @property
    def label(self) -> str:
        """'FILE: NAME' ('FILE: document N' when it has no name)."""
        return f"{self.path}: {self.body['metadata'].get('name') or f'document {self.index}'}"


def _objects(paths: list[str]) -> Iterator[Document]:
    """Every document of every file, in order; a kind other than ACCEPTED_KINDS is an error."""
    for path in paths:
        for index, doc in _documents(path):
            if not isinstance(doc, dict) or doc.get("kind") not in ACCEPTED_KINDS:
                kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                raise CliError(f"{path}: document {index} is {kind!r}, expected kind {' or '.join(ACCEPTED_KINDS)}")
            if doc.get("metadata") is None:
                doc["metadata"] = {}  # `metadata:` with nothing under it; validation then asks for a name
            if not isinstance(doc["metadata"], dict):
                raise CliError(f"{path}: document {index}: metadata must be a mapping")
            yield Document(path, index, doc)


def _namespace_problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a Namespace document (render reads only its name and labels)."""
    meta = doc.get("metadata") or {}
    version = kinds.NAMESPACE.api_version
    problems = [] if doc.get("apiVersion") == version else [f".apiVersion: must be {version}, got {doc.get('apiVersion')!r}"]
    if not meta.get("name"):
        problems.append(".metadata.name: required")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        problems.append(".metadata.labels: must map strings to strings")
    return problems


def _problems(doc: dict[str, Any]) -> list[str]:
    """Every problem of one document, each as 'path: message'."""
    if doc.get("kind") == kinds.NAMESPACE.kind:
        return _namespace_problems(doc)
    return [str(p) for p in validate_object(doc)]


def cmd_validate(args: argparse.Namespace) -> int:
    """Print every problem of every InferenceService, InferenceQuota and Namespace in the files; exit 1 when there is one."""
    failed = False
    for doc in _objects(args.file):
        problems = _problems(doc.body)
        for problem in problems:
            print(f"{doc.label}: {problem}", file=sys.stderr)
        if problems:
            failed = True
        else:
            print(f"{doc.label}: valid")
    return 1 if failed else 0


def _render_inputs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, str]]]:
    """(services with their namespace, quotas, namespace labels) from the files; CliError on the first invalid
    object (every problem of it) or a name given twice."""
    services: list[dict[str, Any]] = []
    quotas: list[dict[str, Any]] = []
    namespaces: dict[str, dict[str, str]] = {}
    seen: dict[tuple[str, ...], str] = {}
    for found in _objects(args.file):
        doc, path = found.body, found.path
        problems = _problems(doc)
        if problems:
            raise CliError("; ".join(f"{found.label}: {p}" for p in problems))
        meta = doc["metadata"]
        if doc["kind"] == contract.KIND:
            doc = {**doc, "metadata": {**meta, "namespace": meta.get("namespace") or args.namespace}}
            key: tuple[str, ...] = (doc["kind"], doc["metadata"]["namespace"], meta["name"])
            services.append(doc)
        elif doc["kind"] == contract.QUOTA_KIND:
            key = (doc["kind"], meta["name"])
            quotas.append(doc)
        else:
            key = (doc["kind"], meta["name"])
            namespaces[meta["name"]] = dict(meta.get("labels") or {})
        if key in seen:
            raise CliError(f"{path}: {key[0]} {'/'.join(key[1:])} is given twice (first in {seen[key]})")
        seen[key] = path
    return services, quotas, namespaces


def cmd_render(args: argparse.Namespace) -> int:
    """Print the children of every InferenceService in the files as YAML documents, after the quotas' decisions."""
    try:
        settings = load_settings(Path(args.settings) if args.settings else None)
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    services, quotas, namespaces = _render_inputs(args)

    def observe(spec: InferenceServiceSpec) -> Observed:
        """The cluster the render assumes: cache filled (unless --cache-pending), optional APIs served."""
        return Observed(serving_cache_key=None if args.cache_pending else cache_key(spec),
                        monitoring_api=not args.no_monitoring, alerting_api=not args.no_monitoring,
                        keda_api=not args.no_keda)

    try:
        rendered = render_offline(services, quotas, namespaces, settings, observe)
    except SpecError as exc:
        raise CliError(str(exc)) from None
    for line in rendered.summary:  # stderr: stdout stays YAML a user pipes to kubectl
        print(line, file=sys.stderr)
    sys.stdout.write(yaml.dump_all(rendered.children, Dumper=_NoAliasDumper, sort_keys=False, width=1000))
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
    render = sub.add_parser(
        "render", help="print every child of InferenceServices as YAML (like helm template), after the InferenceQuotas' decisions")
    render.add_argument("-f", "--file", required=True, action="append",
                        help="YAML file of InferenceServices, InferenceQuotas and Namespaces ('-' for stdin); repeatable")
    render.add_argument("-n", "--namespace", default="default", help="namespace when the object names none")
    render.add_argument("--settings", help="operator settings YAML (accelerator profiles, images)")
    render.add_argument("--cache-pending", action="store_true",
                        help="render the state before the model cache is filled (no Deployment yet)")
    render.add_argument("--no-monitoring", action="store_true", help="as if the Prometheus Operator API were absent")
    render.add_argument("--no-keda", action="store_true", help="as if the KEDA API were absent")
    render.set_defaults(func=cmd_render)
    validate = sub.add_parser("validate", help="check InferenceServices and InferenceQuotas against the CRD schemas and CEL rules")
    validate.add_argument("-f", "--file", required=True, action="append",
                          help="InferenceService / InferenceQuota / Namespace YAML file ('-' for stdin); repeatable")
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
