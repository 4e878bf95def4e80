"""Sandbox parts that need no server: prerequisites, the token authority, the PAM service."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from securemysql.sandbox import SandboxError, pam
from securemysql.sandbox.authority import AZURE_MYSQL_AUDIENCE, Identity, TokenAuthority


def test_pam_prerequisite_error_names_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real_access = os.access

    def no_write_to_pam_dir(path: object, mode: int) -> bool:
        if Path(str(path)) == pam.PAM_DIRECTORY and mode == os.W_OK:
            return False
        return real_access(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(pam.os, "access", no_write_to_pam_dir)

    with pytest.raises(SandboxError) as raised:
        pam.check_prerequisites()

    message = str(raised.value)
    assert "/etc/pam.d" in message
    assert "needs root" in message
    assert 'sudo "$(command -v securemysql)" sandbox up' in message


def test_missing_pam_script_module_names_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pam, "_all_module_dirs", lambda: ["/nonexistent/security"])

    with pytest.raises(SandboxError, match="apt-get install -y libpam-script"):
        pam.check_prerequisites()


def test_pam_service_passes_verifier_address() -> None:
    text = pam.service_text(Path("/srv/sandbox/pam"), 4242, "127.0.0.1")

    assert "pam_script.so dir=/srv/sandbox/pam" in text
    assert "verifier_port=4242" in text
    assert "verifier_host=127.0.0.1" in text


@pytest.fixture
def authority() -> TokenAuthority:
    authority = TokenAuthority()
    authority.register(Identity(mysql_user="app", client_id="client-1"))
    return authority


def test_authority_accepts_own_token(authority: TokenAuthority) -> None:
    token, expires_on = authority.mint(authority.identities["app"], lifetime=600)

    assert authority.validate("app", token) is None
    assert len(token) > 1024  # longer than the 255- and 511-byte caps some clients apply
    assert expires_on > 0


@pytest.mark.parametrize(
    ("mint_arguments", "user", "reason_part"),
    [
        ({"lifetime": -120}, "app", "Expired"),
        ({"audience": "https://management.azure.com"}, "app", "Audience"),
        ({}, "someone-else", "does not match"),
    ],
)
def test_authority_rejects_bad_tokens(
    authority: TokenAuthority, mint_arguments: dict[str, object], user: str, reason_part: str
) -> None:
    token, _ = authority.mint(authority.identities["app"], **mint_arguments)  # type: ignore[arg-type]

    reason = authority.validate(user, token)

    assert reason is not None
    assert reason_part in reason
    assert token not in reason


def test_authority_rejects_after_key_rotation(authority: TokenAuthority) -> None:
    token, _ = authority.mint(authority.identities["app"])

    authority.rotate_signing_key()

    assert "Signature" in (authority.validate("app", token) or "")


def test_authority_matches_user_by_upn() -> None:
    authority = TokenAuthority()
    identity = Identity(mysql_user="alice@contoso.example", upn="alice@contoso.example")

    token, _ = authority.mint(identity, audience=AZURE_MYSQL_AUDIENCE)

    assert authority.validate("alice@contoso.example", token) is None
