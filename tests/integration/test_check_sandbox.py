"""``securemysql check`` and ``securemysql token`` against the sandbox.

Every test records the tokens the sandbox's authority signs (the identity
endpoint gets its tokens from it) and checks that none of them, nor any of
their segments, appears in the report, the JSON document or the logs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from typing import Any, Callable

import jsonschema
import pytest

from securemysql.check.report import load_schema
from securemysql.cli import main
from securemysql.sandbox import Fault, Sandbox, TLSMode

pytestmark = pytest.mark.integration

SUBPROCESS_TIMEOUT = 120


@pytest.fixture
def minted(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token the sandbox's authority signs during the test."""
    tokens: list[str] = []
    original_mint = sandbox.authority.mint

    def recording_mint(*args: Any, **kwargs: Any) -> tuple[str, int]:
        token, expires_on = original_mint(*args, **kwargs)
        tokens.append(token)
        return token, expires_on

    monkeypatch.setattr(sandbox.authority, "mint", recording_mint)
    return tokens


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SECUREMYSQL_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("NO_COLOR", raising=False)


def validate(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        load_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(document)


def base_arguments(sandbox: Sandbox, **overrides: str) -> list[str]:
    info = sandbox.info
    options = {
        "--host": info.host,
        "--port": str(info.port),
        "--user": info.user,
        "--database": info.database,
        "--ssl-ca": info.ssl_ca,
        **{f"--{name.replace('_', '-')}": value for name, value in overrides.items()},
    }
    arguments: list[str] = []
    for option, value in options.items():
        arguments += [option, value]
    return arguments


def assert_no_token(tokens: Iterable[str], *texts: str) -> None:
    """Fail if any token, or its payload or signature segment, appears in ``texts``."""
    combined = "\n".join(texts)
    for token in tokens:
        _header, payload, signature = token.split(".")
        assert token not in combined
        assert payload not in combined
        assert signature not in combined


def run_json(
    capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> tuple[int, dict[str, Any], str]:
    code = main(["check", "--json", *arguments])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    validate(document)
    return code, document, captured.out + captured.err


def stage(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in document["stages"] if item["name"] == name)


# --- A full run ------------------------------------------------------------------------------


def test_full_run_passes_with_json(
    sandbox: Sandbox, minted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, document, output = run_json(capsys, base_arguments(sandbox))

    assert code == 0
    assert document["schema_version"] == 1
    assert document["result"] == {
        "status": "pass",
        "exit_code": 0,
        "failed_stage": None,
        "message": "All stages passed.",
    }
    statuses = [item["status"] for item in document["stages"]]
    assert statuses == ["pass"] * 7

    resolution = stage(document, "resolution")["details"]
    assert resolution["addresses"] == [{"address": "127.0.0.1", "kind": "loopback"}]
    assert resolution["endpoint"] == "loopback"
    assert resolution["cloud"] is None

    tls = stage(document, "tls")["details"]
    assert tls["chain_verified"] is True
    assert tls["hostname_verified"] is True
    assert tls["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert "127.0.0.1" in tls["certificate"]["names"]
    assert tls["chain"]["certificates"][-1]["subject"].endswith("O=securemysql sandbox CA")

    token = stage(document, "token")["details"]
    assert token["credential"] == "ManagedIdentityCredential (through DefaultAzureCredential)"
    assert token["claims"]["aud"] == "https://ossrdbms-aad.database.windows.net"
    assert token["claims"]["tid"] == sandbox.authority.tenant_id
    assert token["claims"]["oid"] == sandbox.system_identity.object_id

    session = stage(document, "session")["details"]
    assert session["current_user"] == "sandbox-app@%"
    assert session["tls"]["version"] == tls["protocol"]
    assert stage(document, "authentication")["details"]["client_tls"] == session["tls"]

    posture = {item["name"]: item for item in document["posture"]}
    assert posture["require_secure_transport"]["status"] == "pass"
    assert posture["tls_version"]["status"] == "pass"
    assert posture["aad_auth_only"]["status"] == "not_visible"
    assert posture["private_endpoint"]["status"] == "not_visible"
    assert posture["threat_protection"]["where_to_check"].startswith("Azure portal")

    assert minted, "the run fetched no token from the sandbox"
    assert_no_token(minted, output)


def test_full_run_text_report(
    sandbox: Sandbox, minted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # With the server's TLS requirement off, the report also shows a failed posture item.
    sandbox.set_require_secure_transport(False)

    code = main(["check", *base_arguments(sandbox)])
    captured = capsys.readouterr()

    assert code == 0
    for number, title in enumerate(
        ["Name resolution", "TCP connect", "TLS", "Access token", "Authentication", "Session"],
        start=1,
    ):
        assert f"[PASS] {number}. {title}" in captured.out
    assert "[WARN] 7. Security posture" in captured.out
    assert "CURRENT_USER()       sandbox-app@%" in captured.out
    assert "[FAIL] Server requires TLS (require_secure_transport): OFF" in captured.out
    assert "\033[" not in captured.out  # not a terminal
    assert_no_token(minted, captured.out, captured.err)


def test_user_assigned_identity_by_client_id(
    sandbox: Sandbox, minted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    info = sandbox.info
    arguments = base_arguments(
        sandbox, user=info.user_assigned_user, client_id=info.user_assigned_client_id
    )

    code, document, output = run_json(capsys, arguments)

    assert code == 0
    token = stage(document, "token")["details"]
    assert token["client_id"] == info.user_assigned_client_id
    assert token["claims"]["appid"] == info.user_assigned_client_id
    assert stage(document, "session")["details"]["current_user"] == "sandbox-uami@%"
    assert_no_token(minted, output)


def test_mysql_connector_driver_passes(
    sandbox: Sandbox, minted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("securemysql.drivers.mysqlconnector")

    code, document, output = run_json(capsys, base_arguments(sandbox, driver="mysql.connector"))

    assert code == 0, document["result"]["message"]
    assert stage(document, "authentication")["details"]["driver"] == "mysql.connector"
    assert stage(document, "session")["details"]["current_user"] == "sandbox-app@%"
    assert_no_token(minted, output)


# --- One failure per stage ---------------------------------------------------------------------


def stop_server(sandbox: Sandbox) -> None:
    sandbox.stop_server()


def restart_with(mode: TLSMode) -> Callable[[Sandbox], None]:
    def restart(sandbox: Sandbox) -> None:
        sandbox.restart(tls=mode)

    return restart


def inject(fault: Fault) -> Callable[[Sandbox], None]:
    def inject_fault(sandbox: Sandbox) -> None:
        sandbox.identity.inject_fault(fault)

    return inject_fault


def unchanged(sandbox: Sandbox) -> None:
    """The sandbox stays as it is; the options cause the failure."""


FAILURES = [
    pytest.param(
        stop_server,
        {},
        11,
        "tcp",
        "connection was refused",
        "Check that the server is running",
        id="server-down",
    ),
    pytest.param(
        restart_with(TLSMode.NONE),
        {},
        12,
        "tls",
        "does not offer TLS",
        "Enable TLS on the server",
        id="no-tls",
    ),
    pytest.param(
        restart_with(TLSMode.WRONG_HOST),
        {},
        12,
        "tls",
        "does not name '127.0.0.1'",
        "Connect with a host name that the certificate lists",
        id="wrong-host-name",
    ),
    pytest.param(
        restart_with(TLSMode.UNTRUSTED),
        {},
        12,
        "tls",
        "does not verify against",
        "Pass --ssl-ca the PEM file of the CA",
        id="untrusted-ca",
    ),
    pytest.param(
        inject(Fault.EXPIRED_TOKEN),
        {},
        13,
        "token",
        "access token expired at",
        "Check this machine's clock",
        id="expired-token",
    ),
    pytest.param(
        inject(Fault.WRONG_AUDIENCE),
        {},
        13,
        "token",
        "issued for audience 'https://management.azure.com'",
        "Pass --scope for the server's cloud",
        id="wrong-audience",
    ),
    pytest.param(
        unchanged,
        {"user": "no-such-user"},
        14,
        "authentication",
        "1045 (access denied) for MySQL user 'no-such-user'",
        "likely causes",
        id="unknown-user",
    ),
    pytest.param(
        unchanged,
        {"database": "no_such_db"},
        15,
        "session",
        "'no_such_db'",
        "Check the name passed with --database",
        id="unknown-database",
    ),
]


@pytest.mark.parametrize(
    ("break_sandbox", "overrides", "exit_code", "failed_stage", "cause", "fix"), FAILURES
)
def test_failure_at_stage(
    sandbox: Sandbox,
    minted: list[str],
    capsys: pytest.CaptureFixture[str],
    break_sandbox: Callable[[Sandbox], None],
    overrides: dict[str, str],
    exit_code: int,
    failed_stage: str,
    cause: str,
    fix: str,
) -> None:
    break_sandbox(sandbox)

    code, document, output = run_json(capsys, base_arguments(sandbox, **overrides))

    assert code == exit_code
    assert document["result"]["exit_code"] == exit_code
    assert document["result"]["failed_stage"] == failed_stage
    failed = stage(document, failed_stage)
    assert failed["status"] == "fail"
    assert cause in failed["problem"]["cause"]
    assert fix in failed["problem"]["fix"]

    names = [item["name"] for item in document["stages"]]
    position = names.index(failed_stage)
    assert all(item["status"] in ("pass", "warn") for item in document["stages"][:position])
    assert all(item["status"] == "skipped" for item in document["stages"][position + 1 :])
    assert_no_token(minted, output)


def test_wrong_host_reports_both_checks(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.restart(tls=TLSMode.WRONG_HOST)

    code, document, _output = run_json(capsys, base_arguments(sandbox))

    tls = stage(document, "tls")["details"]
    assert code == 12
    assert tls["chain_verified"] is True
    assert tls["hostname_verified"] is False
    assert tls["certificate"]["names"] == ["wrong-host.invalid"]
    assert tls["chain"]["source"] == "presented"


def test_unknown_user_lists_likely_causes(
    sandbox: Sandbox, minted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", *base_arguments(sandbox, user="no-such-user")])
    captured = capsys.readouterr()

    assert code == 14
    assert "[FAIL] 5. Authentication" in captured.out
    assert "likely cause 1       No MySQL user 'no-such-user' exists" in captured.out
    assert "likely cause 4" in captured.out
    assert "Exit code 14." in captured.out
    assert len(minted) >= 2  # the factory refreshed the rejected token once
    assert_no_token(minted, captured.out, captured.err)


# --- Posture with --strict -----------------------------------------------------------------------


def test_strict_fails_on_posture(
    sandbox: Sandbox, minted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.set_require_secure_transport(False)

    code, document, output = run_json(capsys, [*base_arguments(sandbox), "--strict"])

    posture = stage(document, "posture")
    assert code == 16
    assert posture["status"] == "fail"
    assert "require_secure_transport" in posture["problem"]["cause"]
    assert_no_token(minted, output)


def test_strict_passes_with_secure_transport(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.set_require_secure_transport(True)

    code, document, _output = run_json(capsys, [*base_arguments(sandbox), "--strict"])

    posture = {item["name"]: item["status"] for item in document["posture"]}
    assert code == 0
    assert stage(document, "posture")["status"] == "pass"
    assert posture["require_secure_transport"] == "pass"


# --- Logs and subprocesses -----------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["pymysql", "mysql.connector"])
@pytest.mark.parametrize("user", ["sandbox-app", "no-such-user"])
def test_debug_logs_without_token(
    sandbox: Sandbox,
    minted: list[str],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    user: str,
    driver: str,
) -> None:
    if driver == "mysql.connector":
        # mysql-connector logs the clear-text password packet at DEBUG.
        pytest.importorskip("securemysql.drivers.mysqlconnector")
    caplog.set_level(logging.DEBUG)

    code = main(["-vv", "check", "--json", *base_arguments(sandbox, user=user, driver=driver)])
    captured = capsys.readouterr()

    assert code == (0 if user == "sandbox-app" else 14)
    assert any(record.name.startswith("securemysql.check") for record in caplog.records)
    assert any(record.name.startswith("azure") for record in caplog.records)
    assert_no_token(minted, captured.out, captured.err, caplog.text)


def check_environment(sandbox: Sandbox) -> dict[str, str]:
    info = sandbox.info
    environment = {name: value for name, value in os.environ.items() if name != "NO_COLOR"}
    environment.update(info.env)
    environment.update(
        {
            "SECUREMYSQL_HOST": info.host,
            "SECUREMYSQL_PORT": str(info.port),
            "SECUREMYSQL_USER": info.user,
            "SECUREMYSQL_DATABASE": info.database,
            "SECUREMYSQL_SSL_CA": info.ssl_ca,
            "SECUREMYSQL_JSON": "1",
        }
    )
    return environment


def test_subprocess_run_from_environment(sandbox: Sandbox, minted: list[str]) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "securemysql", "-vv", "check"],
        env=check_environment(sandbox),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    validate(document)
    assert document["target"]["port"] == sandbox.info.port
    assert stage(document, "session")["details"]["current_user"] == "sandbox-app@%"
    assert "DEBUG securemysql.check" in completed.stderr
    assert minted
    assert_no_token(minted, completed.stdout, completed.stderr)


def test_subprocess_failure_exit_code(sandbox: Sandbox, minted: list[str]) -> None:
    environment = check_environment(sandbox)
    environment["SECUREMYSQL_USER"] = "no-such-user"
    environment.pop("SECUREMYSQL_JSON")

    completed = subprocess.run(
        [sys.executable, "-m", "securemysql", "-vv", "check"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )

    assert completed.returncode == 14
    assert "[FAIL] 5. Authentication" in completed.stdout
    assert_no_token(minted, completed.stdout, completed.stderr)


# --- securemysql token ---------------------------------------------------------------------------


def test_token_command_prints_only_token(
    sandbox: Sandbox, minted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["token", "--host", sandbox.info.host])
    captured = capsys.readouterr()

    assert code == 0
    assert len(minted) == 1
    assert captured.out == minted[0] + "\n"
    assert "secret" in captured.err
    assert_no_token(minted, captured.err)


def test_token_command_failure_exit_code(
    sandbox: Sandbox, minted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.identity.inject_fault(Fault.WRONG_AUDIENCE)

    code = main(["token"])
    captured = capsys.readouterr()

    assert code == 13
    assert captured.out == ""
    assert "audience" in captured.err
    assert_no_token(minted, captured.err)


@pytest.mark.skipif(shutil.which("mariadb") is None, reason="needs the mariadb client")
def test_mariadb_client_logs_in_with_token(sandbox: Sandbox, minted: list[str]) -> None:
    info = sandbox.info
    environment = check_environment(sandbox)
    issued = subprocess.run(
        [sys.executable, "-m", "securemysql", "token"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=True,
    )
    token = issued.stdout.strip()
    assert minted == [token]
    assert "secret" in issued.stderr

    command = [
        "mariadb", "--no-defaults",
        "--host", info.host, "--port", str(info.port), "--user", info.user,
        "--enable-cleartext-plugin",
        "--ssl-ca", info.ssl_ca, "--ssl-verify-server-cert",
        "--batch", "--skip-column-names",
        "-e", "SELECT CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_version'",
    ]  # fmt: skip

    # MYSQL_PWD keeps the token out of the process list, which shows argv to everyone.
    client = subprocess.run(
        command,
        env={**environment, "MYSQL_PWD": token},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )

    assert client.returncode == 0, client.stderr
    # MariaDB's 10.11 client prints "WARNING: option '--enable-cleartext-plugin' is obsolete."
    lines = [line for line in client.stdout.splitlines() if not line.startswith("WARNING:")]
    assert token not in command
    assert lines[0] == "sandbox-app@%"
    assert lines[1].split("\t")[1] in ("TLSv1.2", "TLSv1.3")
