"""The tenants file and API-key authentication (inferkube.runtime.tenancy.tenants)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from inferkube.runtime.tenancy import Tenant, TenantRegistry, TenantsFileError, bearer_token, sha256_hex
from inferkube.runtime.tenancy import tenants as tenants_module

ALICE_KEY = "sk-alice-CANARY-5f1d2e"
BOB_KEY = "sk-bob-7a9c"

GOOD = textwrap.dedent(
    f"""
    tenants:
      - name: alice
        key: {ALICE_KEY}
        requestsPerMinute: 60
        tokensPerMinute: 10000
        maxConcurrent: 4
      - name: bob
        keySha256: {hashlib.sha256(BOB_KEY.encode()).hexdigest().upper()}
      - name: carol
        key: sk-carol
        tokensPerMinute: 500
    """
)


@pytest.fixture
def registry(tmp_path: Path) -> TenantRegistry:
    path = tmp_path / "tenants.yaml"
    path.write_text(GOOD)
    return TenantRegistry.from_file(path)


def load(text: str) -> TenantRegistry:
    return TenantRegistry.from_yaml(textwrap.dedent(text))


def test_file_parses_limits_and_names(registry: TenantRegistry) -> None:
    assert registry.enabled
    assert [t.name for t in registry.tenants] == ["alice", "bob", "carol"]
    alice = registry.get("alice")
    assert alice == Tenant("alice", requests_per_minute=60, tokens_per_minute=10000, max_concurrent=4)
    assert registry.get("bob") == Tenant("bob")  # unset limits stay None (server defaults apply)


def test_empty_registry_and_empty_file_disable_auth(tmp_path: Path) -> None:
    assert not TenantRegistry.empty().enabled
    assert TenantRegistry.empty().authenticate(f"Bearer {ALICE_KEY}") is None
    path = tmp_path / "t.yaml"
    path.write_text("tenants: []\n")
    assert not TenantRegistry.from_file(path).enabled
    path.write_text("")
    assert not TenantRegistry.from_file(path).enabled


def test_right_key_authenticates(registry: TenantRegistry) -> None:
    assert registry.authenticate(f"Bearer {ALICE_KEY}").name == "alice"
    assert registry.authenticate(f"bearer   {ALICE_KEY}  ").name == "alice"  # scheme is case-insensitive
    assert registry.authenticate("Bearer sk-carol").name == "carol"


def test_key_sha256_form_authenticates_with_the_clear_key(registry: TenantRegistry) -> None:
    assert registry.authenticate(f"Bearer {BOB_KEY}").name == "bob"
    # The digest itself is not a key.
    assert registry.authenticate(f"Bearer {sha256_hex(BOB_KEY)}") is None


@pytest.mark.parametrize(
    "header",
    [
        None, "", "Bearer", "Bearer ", f"Basic {ALICE_KEY}", ALICE_KEY, "Bearer sk-wrong",
        f"Bearer {ALICE_KEY}x",
    ],
)
def test_missing_malformed_or_wrong_key_is_rejected(registry: TenantRegistry, header: str | None) -> None:
    assert registry.authenticate(header) is None


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("BEARER abc") == "abc"
    assert bearer_token("Token abc") is None
    assert bearer_token(None) is None


def test_every_tenant_is_compared_even_after_a_match(
    registry: TenantRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = tenants_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tenants_module.hmac, "compare_digest", counting)
    assert registry.authenticate(f"Bearer {ALICE_KEY}").name == "alice"  # alice is the FIRST entry
    assert len(calls) == 3
    calls.clear()
    assert registry.authenticate("Bearer nobody") is None
    assert len(calls) == 3
    # Digests of equal length are compared, never the clear key.
    assert all(len(a) == len(b) == 32 for a, b in calls)


def test_key_never_appears_in_repr_or_errors(registry: TenantRegistry) -> None:
    alice = registry.authenticate(f"Bearer {ALICE_KEY}")
    assert not hasattr(alice, "key")
    for text in (repr(alice), str(alice), repr(registry)):
        assert "CANARY" not in text
    spec = tenants_module.TenantsFile.model_validate({"tenants": [{"name": "a", "key": ALICE_KEY}]})
    assert "CANARY" not in repr(spec)
    with pytest.raises(TenantsFileError) as err:
        load(f"tenants: [{{name: alice, key: {ALICE_KEY}, requestsPerMinute: -1}}]")
    assert "CANARY" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tenants: [{name: alice, key: k1, requestsPerMinute: 0}]",
            ["tenant 'alice' (entry 1)", "'requestsPerMinute'", "greater than 0"],
        ),
        (
            "tenants: [{name: a, key: k1}, {name: bob, key: k2, tokensPerMinute: lots}]",
            ["tenant 'bob' (entry 2)", "'tokensPerMinute'", "integer"],
        ),
        (
            "tenants: [{name: alice, key: k1, rpm: 5}]",
            ["tenant 'alice' (entry 1)", "'rpm'", "Extra inputs are not permitted"],
        ),
        ("tenants: [{name: alice}]", ["tenant 'alice' (entry 1)", "exactly one of `key` or `keySha256`"]),
        (
            f"tenants: [{{name: alice, key: k1, keySha256: {'a' * 64}}}]",
            ["tenant 'alice'", "exactly one of `key` or `keySha256`"],
        ),
        ("tenants: [{name: alice, keySha256: abc}]", ["tenant 'alice'", "'keySha256'", "64 hexadecimal"]),
        ("tenants: [{key: k1}]", ["tenant entry 1", "'name'", "Field required"]),
        ("tenants: [{name: 'Bad Name', key: k1}]", ["tenant 'Bad Name'", "'name'"]),
        ("tenants: [{name: alice, key: 'has space'}]", ["tenant 'alice'", "'key'", "whitespace"]),
        (
            "tenants: [{name: alice, key: k1}, {name: alice, key: k2}]",
            ["tenant 'alice' (entry 2)", "'name'", "duplicate of entry 1"],
        ),
        (
            f"tenants: [{{name: alice, key: k1}}, {{name: bob, keySha256: {sha256_hex('k1')}}}]",
            ["tenant 'bob' (entry 2)", "'keySha256'", "same key as tenant 'alice'"],
        ),
        ("users: []", ["users", "Extra inputs are not permitted"]),
        ("tenants: {name: alice}", ["tenants", "valid list"]),
        ("tenants: [unclosed", ["not valid YAML"]),
    ],
)
def test_bad_file_names_tenant_and_field(text: str, expected: list[str]) -> None:
    with pytest.raises(TenantsFileError) as err:
        load(text)
    for fragment in expected:
        assert fragment in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TenantsFileError, match="cannot read tenants file"):
        TenantRegistry.from_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "text",
    [
        'tenants:\n  - name: alice\n    key: "sk-SECRET-unclosed\n',
        "tenants:\n  - name: alice\n    key: sk-SECRET-tab\t: [\n",
        "tenants:\n  - name: alice\n    key: sk-SECRET-x\n   bad: [sk-SECRET-y\n",
    ],
)
def test_broken_yaml_error_reports_position_never_the_key(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    with pytest.raises(TenantsFileError) as err:
        TenantRegistry.from_file(path)
    message = str(err.value)
    assert "not valid YAML" in message
    assert "line " in message and "column " in message
    assert "SECRET" not in message
