"""The sandbox behaves like Azure Database for MySQL: TLS, clear-text token logins, validation."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.identity import ManagedIdentityCredential

from securemysql.sandbox import Fault, Sandbox
from securemysql.sandbox.authority import AZURE_MYSQL_AUDIENCE

pytestmark = pytest.mark.integration

SCOPE = AZURE_MYSQL_AUDIENCE + "/.default"


def _login(sandbox: Sandbox, token: str, user: str | None = None) -> pymysql.connections.Connection:
    info = sandbox.info
    context = ssl.create_default_context(cafile=info.ssl_ca)
    return pymysql.connect(
        host=info.host,
        port=info.port,
        user=user or info.user,
        password=token,
        ssl=context,
        database=info.database,
        connect_timeout=5,
    )


def _current_user(connection: pymysql.connections.Connection) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER()")
        row = cursor.fetchone()
    assert row is not None
    return str(row[0])


def test_good_token_logs_in(sandbox: Sandbox) -> None:
    accepted_before = sandbox.verifier.accepted

    connection = _login(sandbox, sandbox.mint_token())

    assert _current_user(connection) == "sandbox-app@%"
    assert sandbox.verifier.accepted == accepted_before + 1
    connection.close()


def test_token_login_uses_clear_text_plugin(sandbox: Sandbox) -> None:
    rows = sandbox.server.query(
        "SELECT plugin, authentication_string FROM mysql.user WHERE user = %s", ["sandbox-app"]
    )

    assert rows[0][0] == "pam"


@pytest.mark.parametrize(
    ("case", "expected_reason"),
    [
        ("expired", "ExpiredSignatureError"),
        ("wrong_audience", "InvalidAudienceError"),
        ("wrong_key", "InvalidSignatureError"),
        ("wrong_user", "does not match MySQL user"),
    ],
)
def test_bad_token_rejected_with_1045(sandbox: Sandbox, case: str, expected_reason: str) -> None:
    tokens = {
        "expired": lambda: sandbox.mint_token(lifetime=-300),
        "wrong_audience": lambda: sandbox.mint_token(audience="https://management.azure.com"),
        "wrong_key": lambda: sandbox.mint_token(wrong_key=True),
        "wrong_user": lambda: sandbox.mint_token(user="sandbox-uami"),
    }
    token = tokens[case]()

    with pytest.raises(pymysql.err.OperationalError) as raised:
        _login(sandbox, token)

    assert raised.value.args[0] == 1045
    user, reason = sandbox.verifier.rejections[-1]
    assert user == "sandbox-app"
    assert expected_reason in reason
    assert token not in reason


def test_rotated_signing_key_rejects_old_tokens(sandbox: Sandbox) -> None:
    old_token = sandbox.mint_token()
    sandbox.rotate_signing_key()

    with pytest.raises(pymysql.err.OperationalError) as raised:
        _login(sandbox, old_token)

    assert raised.value.args[0] == 1045
    _login(sandbox, sandbox.mint_token()).close()


def test_identity_endpoint_serves_azure_identity(sandbox: Sandbox) -> None:
    credential = ManagedIdentityCredential()

    access_token = credential.get_token(SCOPE)
    connection = _login(sandbox, access_token.token)

    assert sandbox.identity.request_count == 1
    assert _current_user(connection) == "sandbox-app@%"
    assert access_token.expires_on > time.time() + 3000
    connection.close()


def test_user_assigned_identity_by_client_id(sandbox: Sandbox) -> None:
    info = sandbox.info
    credential = ManagedIdentityCredential(client_id=info.user_assigned_client_id)

    connection = _login(sandbox, credential.get_token(SCOPE).token, user=info.user_assigned_user)

    assert _current_user(connection) == "sandbox-uami@%"
    connection.close()


def test_token_lifetime_is_configurable(sandbox: Sandbox) -> None:
    sandbox.identity.token_lifetime = 90

    expires_on = ManagedIdentityCredential().get_token(SCOPE).expires_on

    assert abs(expires_on - (time.time() + 90)) < 5


@pytest.mark.parametrize("fault", [Fault.HTTP_500, Fault.HTTP_429, Fault.MALFORMED_JSON])
def test_endpoint_faults_fail_azure_identity(sandbox: Sandbox, fault: Fault) -> None:
    sandbox.identity.inject_fault(fault)

    # Malformed JSON surfaces as azure.core's DecodeError, the others as ClientAuthenticationError.
    with pytest.raises(AzureError):
        ManagedIdentityCredential().get_token(SCOPE)

    assert sandbox.identity.request_count >= 1


@pytest.mark.parametrize(
    ("fault", "expected_reason"),
    [(Fault.WRONG_AUDIENCE, "InvalidAudienceError"), (Fault.EXPIRED_TOKEN, "Expired")],
)
def test_endpoint_bad_tokens_rejected_by_server(
    sandbox: Sandbox, fault: Fault, expected_reason: str
) -> None:
    sandbox.identity.inject_fault(fault, count=1)
    token = ManagedIdentityCredential().get_token(SCOPE).token

    with pytest.raises(pymysql.err.OperationalError):
        _login(sandbox, token)

    assert expected_reason in sandbox.verifier.rejections[-1][1]


def test_endpoint_delay_exceeds_client_timeout(sandbox: Sandbox) -> None:
    sandbox.identity.inject_fault(Fault.DELAY, count=1, delay=3.0)
    credential = ManagedIdentityCredential(read_timeout=0.5, retry_total=0)

    with pytest.raises(AzureError, match="timed out"):
        credential.get_token(SCOPE)


def test_fault_with_count_clears_itself(sandbox: Sandbox) -> None:
    sandbox.identity.inject_fault(Fault.HTTP_500, count=1)

    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(retry_total=0).get_token(SCOPE)
    ManagedIdentityCredential().get_token(SCOPE)

    assert sandbox.identity.status_counts() == {500: 1, 200: 1}


def test_kill_connections_closes_clients(sandbox: Sandbox) -> None:
    connection = _login(sandbox, sandbox.mint_token())

    killed = sandbox.kill_connections()

    assert killed >= 1
    with pytest.raises(pymysql.err.OperationalError):
        _current_user(connection)


def test_secure_transport_required_by_default(sandbox: Sandbox) -> None:
    rows = sandbox.server.query("SELECT @@GLOBAL.require_secure_transport")

    assert rows[0][0] == 1


def test_require_secure_transport_control(sandbox: Sandbox) -> None:
    sandbox.set_require_secure_transport(False)

    rows = sandbox.server.query("SELECT @@GLOBAL.require_secure_transport")

    assert rows[0][0] == 0


def test_restart_keeps_users_and_port(sandbox: Sandbox) -> None:
    port = sandbox.info.port

    sandbox.restart()

    assert sandbox.info.port == port
    _login(sandbox, sandbox.mint_token()).close()


def test_cli_sandbox_up_json_and_down(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    command = [sys.executable, "-m", "securemysql", "sandbox"]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}

    up = subprocess.run(
        [*command, "up", "--json", "--state-file", str(state_file)],
        capture_output=True, text=True, timeout=120, env=environment, check=False,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        for key in ("host", "port", "user", "database", "ssl_ca", "env"):
            assert key in info
        assert "admin_password" not in info
        assert info["env"]["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
        assert Path(info["ssl_ca"]).exists()
    finally:
        down = subprocess.run(
            [*command, "down", "--state-file", str(state_file)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert not state_file.exists()
    assert not Path(info["ssl_ca"]).exists()


def test_cli_foreground_exports_details(tmp_path: Path) -> None:
    export = tmp_path / "export"
    command = [
        sys.executable, "-m", "securemysql", "sandbox", "up", "--foreground",
        "--state-file", str(tmp_path / "state.json"), "--export-dir", str(export),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not (export / "sandbox.json").exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.2)
        details = json.loads((export / "sandbox.json").read_text())
        assert details["ssl_ca"] == str(export / "ca.pem")
        assert (export / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    finally:
        process.terminate()
        returncode = process.wait(timeout=60)
    assert returncode == 0


def test_sandbox_retries_port_taken_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    from securemysql.sandbox import core
    from securemysql.sandbox.server import free_port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(core, "free_port", lambda: next(ports))

        with Sandbox() as sandbox:
            port = sandbox.info.port
            _login(sandbox, sandbox.mint_token()).close()

    assert port != taken


def test_killed_owner_leaves_nothing_running(tmp_path: Path) -> None:
    script = (
        "from securemysql.sandbox import Sandbox\n"
        "sandbox = Sandbox().start()\n"
        "print(sandbox.server.pid, sandbox.info.ssl_ca, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    server_pid, ssl_ca = owner.stdout.readline().split()

    owner.kill()  # SIGKILL: no finalizer, atexit hook or signal handler runs
    owner.wait(timeout=30)

    deadline = time.monotonic() + 60
    while Path(f"/proc/{server_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    while Path(ssl_ca).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not Path(f"/proc/{server_pid}").exists()
    assert not Path(ssl_ca).exists()
