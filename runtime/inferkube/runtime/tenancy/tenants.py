"""API keys: the tenants file, the `Tenant` value object and constant-time key lookup."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inferkube.api.quota import Priority

TENANT_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class TenantsFileError(ValueError):
    """The tenants file is missing, not YAML, or does not match the schema."""


@dataclass(frozen=True, slots=True)
class Tenant:
    """One API-key holder and its limits (None = fall back to the server default)."""

    name: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    priority: int | str | None = None  # high, normal, low or an integer (None: normal); see tenancy.md


# Every caller when no keys are configured; also the `tenant` metric label of a caller without a key.
ANONYMOUS = Tenant(name="anonymous")


class TenantSpec(BaseModel):
    """One entry of `tenants:` as written in the file (camelCase, like Kubernetes)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(pattern=TENANT_NAME_PATTERN, description="Tenant name; used in metrics and logs.")
    key: str | None = Field(default=None, min_length=1, repr=False, description="The API key in clear.")
    key_sha256: str | None = Field(
        default=None, alias="keySha256", description="Hex SHA-256 of the API key (instead of `key`)."
    )
    requests_per_minute: int | None = Field(default=None, alias="requestsPerMinute", gt=0)
    tokens_per_minute: int | None = Field(default=None, alias="tokensPerMinute", gt=0)
    max_concurrent: int | None = Field(default=None, alias="maxConcurrent", gt=0)
    priority: Priority | None = Field(default=None, description="high, normal, low or -1000..1000 (None: normal).")

    @field_validator("key")
    @classmethod
    def _key_has_no_whitespace(cls, value: str | None) -> str | None:
        if value is not None and any(ch.isspace() for ch in value):
            raise ValueError("the key must not contain whitespace (it is sent as `Bearer <key>`)")
        return value

    @field_validator("key_sha256")
    @classmethod
    def _digest_is_hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.match(value):
            raise ValueError("must be 64 hexadecimal characters (the SHA-256 of the key)")
        return value.lower() if value is not None else None

    @model_validator(mode="after")
    def _exactly_one_key_form(self) -> TenantSpec:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("set exactly one of `key` or `keySha256`")
        return self

    def digest(self) -> bytes:
        """SHA-256 digest of this tenant's key (raw bytes)."""
        if self.key_sha256 is not None:
            return bytes.fromhex(self.key_sha256)
        assert self.key is not None
        return hashlib.sha256(self.key.encode()).digest()

    def to_tenant(self) -> Tenant:
        """The public view of this entry, without the key."""
        return Tenant(
            name=self.name,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            max_concurrent=self.max_concurrent,
            priority=self.priority,
        )


class TenantsFile(BaseModel):
    """The whole tenants file: `tenants:` list."""

    model_config = ConfigDict(extra="forbid")

    tenants: list[TenantSpec] = Field(default_factory=list)


def _describe_error(raw: Any, error: Any) -> str:
    """One human line for one pydantic error, naming the tenant and the field."""
    loc = list(error["loc"])
    msg = error["msg"].removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "tenants" and isinstance(loc[1], int):
        index = loc[1]
        name = None
        try:
            name = raw["tenants"][index].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        who = f"tenant {name!r} (entry {index + 1})" if name else f"tenant entry {index + 1}"
        field = ".".join(str(part) for part in loc[2:])
        return f"{who}: field {field!r}: {msg}" if field else f"{who}: {msg}"
    where = ".".join(str(part) for part in loc) or "<top level>"
    return f"{where}: {msg}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where (line/column), never the offending text: a broken line may hold a key."""
    problem = getattr(exc, "problem", None) or "syntax error"
    context = getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    text = f"{context}: {problem}" if context else str(problem)
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    start = getattr(exc, "context_mark", None)
    if context and start is not None and start is not mark:
        text += f"; started at line {start.line + 1}, column {start.column + 1}"
    return text


def parse_tenants(raw: Any, source: str = "tenants file") -> TenantsFile:
    """Validate parsed YAML into a `TenantsFile`, raising `TenantsFileError` with readable messages."""
    if raw is None:
        raw = {}
    try:
        parsed = TenantsFile.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe_error(raw, err) for err in exc.errors(include_input=False)]
        raise TenantsFileError(f"{source} is invalid:\n  " + "\n  ".join(lines)) from None
    seen_names: dict[str, int] = {}
    seen_digests: dict[bytes, str] = {}
    for index, spec in enumerate(parsed.tenants):
        if spec.name in seen_names:
            raise TenantsFileError(
                f"{source} is invalid: tenant {spec.name!r} (entry {index + 1}): field 'name': "
                f"duplicate of entry {seen_names[spec.name] + 1}"
            )
        seen_names[spec.name] = index
        digest = spec.digest()
        if digest in seen_digests:
            field = "keySha256" if spec.key_sha256 is not None else "key"
            raise TenantsFileError(
                f"{source} is invalid: tenant {spec.name!r} (entry {index + 1}): field {field!r}: "
                f"same key as tenant {seen_digests[digest]!r}"
            )
        seen_digests[digest] = spec.name
    return parsed


class TenantRegistry:
    """All tenants and their key digests; answers `authenticate(Authorization header)`."""

    def __init__(self, entries: list[tuple[bytes, Tenant]]) -> None:
        self._entries = list(entries)
        self._by_name = {tenant.name: tenant for _, tenant in self._entries}

    @classmethod
    def empty(cls) -> TenantRegistry:
        """A registry with no keys: authentication is off."""
        return cls([])

    @classmethod
    def from_model(cls, parsed: TenantsFile) -> TenantRegistry:
        """Build from an already validated `TenantsFile`."""
        return cls([(spec.digest(), spec.to_tenant()) for spec in parsed.tenants])

    @classmethod
    def from_yaml(cls, text: str, source: str = "tenants file") -> TenantRegistry:
        """Parse YAML text (the content of the tenants file)."""
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TenantsFileError(f"{source} is not valid YAML: {_yaml_problem(exc)}") from None
        return cls.from_model(parse_tenants(raw, source))

    @classmethod
    def from_file(cls, path: str | Path) -> TenantRegistry:
        """Read and validate the tenants file at `path`."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TenantsFileError(f"cannot read tenants file {str(path)!r}: {exc.strerror or exc}") from None
        return cls.from_yaml(text, source=f"tenants file {str(path)!r}")

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured (then every protected route needs one)."""
        return bool(self._entries)

    @property
    def tenants(self) -> list[Tenant]:
        """All tenants, in file order."""
        return [tenant for _, tenant in self._entries]

    def get(self, name: str) -> Tenant | None:
        """The tenant called `name`, if any."""
        return self._by_name.get(name)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TenantRegistry(tenants={[t.name for t in self.tenants]!r})"

    def authenticate(self, authorization_header: str | None) -> Tenant | None:
        """The tenant whose key is in `Authorization: Bearer <key>`, or None (missing/malformed/wrong)."""
        token = bearer_token(authorization_header)
        if token is None or not self._entries:
            return None
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Tenant | None = None
        # Compare against every tenant, without stopping at a match, so the time taken does not
        # tell an attacker which (or whether an early) entry matched.
        for digest, tenant in self._entries:
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None if absent or another scheme."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def sha256_hex(key: str) -> str:
    """The `keySha256` value for a key (what to put in the tenants file instead of the key)."""
    return hashlib.sha256(key.encode()).hexdigest()
