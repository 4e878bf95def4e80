"""Every script in examples/ runs against the sandbox, so none of them rots."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from securemysql.sandbox import Sandbox

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _environment(sandbox: Sandbox) -> dict[str, str]:
    info = sandbox.info
    return {
        **os.environ,
        **info.env,
        "AZURE_MYSQL_HOST": info.host,
        "AZURE_MYSQL_PORT": str(info.port),
        "AZURE_MYSQL_USER": info.user,
        "AZURE_MYSQL_DATABASE": info.database,
        "AZURE_MYSQL_SSL_CA": info.ssl_ca,
        "AZURE_MYSQL_CLIENT_ID": info.user_assigned_client_id,
        "AZURE_MYSQL_UAMI_USER": info.user_assigned_user,
    }


def test_pymysql_basic_example(sandbox: Sandbox) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "pymysql_basic.py")],
        env=_environment(sandbox), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "Connected as sandbox-app@%" in result.stdout
    assert "TLSv1." in result.stdout


def _run_example(
    sandbox: Sandbox, name: str, **extra_environment: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**_environment(sandbox), **extra_environment},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _c_extension_importable() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import _mysql_connector"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.parametrize(
    ("use_pure", "mode"), [("1", "pure Python"), ("0", "C extension")], ids=["pure", "cext"]
)
def test_mysqlconnector_example(sandbox: Sandbox, use_pure: str, mode: str) -> None:
    if use_pure == "0" and not _c_extension_importable():
        pytest.skip("the mysql-connector C extension cannot be imported here")

    result = _run_example(sandbox, "mysqlconnector_basic.py", AZURE_MYSQL_USE_PURE=use_pure)

    assert result.returncode == 0, result.stderr
    assert "Connected as sandbox-app@%" in result.stdout
    assert "TLSv1." in result.stdout
    assert f"mysql-connector mode: {mode}" in result.stdout


def test_sqlalchemy_example_all_forms(sandbox: Sandbox) -> None:
    result = _run_example(sandbox, "sqlalchemy_engine.py")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for form, line in zip(("securemysql.sqlalchemy.create_engine", "URL plugin", "creator"), lines):
        assert line.startswith(f"{form}: connected as sandbox-app@% over TLSv1.")


def test_user_assigned_identity_example(sandbox: Sandbox) -> None:
    result = _run_example(sandbox, "user_assigned_identity.py")

    assert result.returncode == 0, result.stderr
    assert "managed_identity_client_id: connected as sandbox-uami@%" in result.stdout
    assert "ManagedIdentityCredential: connected as sandbox-uami@%" in result.stdout


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline().strip()


def _request(address: tuple[str, int], path: str, method: str = "GET") -> tuple[int, Any]:
    connection = http.client.HTTPConnection(*address, timeout=60)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_wsgi_app_example_serves_from_pool(sandbox: Sandbox) -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "wsgi_app.py")],
        env={**_environment(sandbox), "APP_HOST": "127.0.0.1", "APP_PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _first_line(process, timeout=120)
        assert line.startswith("Serving on http://127.0.0.1:"), line
        address = ("127.0.0.1", int(line.rsplit(":", 1)[1]))

        health = _request(address, "/health")
        whoami = _request(address, "/whoami")
        first = _request(address, "/visits", method="POST")
        second = _request(address, "/visits", method="POST")
        missing = _request(address, "/nothing-here")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)

    assert health == (200, {"status": "ok"})
    assert whoami[0] == 200
    assert whoami[1]["user"] == "sandbox-app@%"
    assert str(whoami[1]["tls_version"]).startswith("TLSv1.")
    assert first[0] == 200
    assert second[1]["visits"] == first[1]["visits"] + 1
    assert missing[0] == 404
    assert process.returncode == 0, stderr


def _run_gate(
    sandbox: Sandbox, tmp_path: Path, **extra_environment: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    report = tmp_path / "check-report.json"
    # The gate's identity is the system-assigned one, whose MySQL user is AZURE_MYSQL_USER.
    base = {
        name: value
        for name, value in _environment(sandbox).items()
        if name != "AZURE_MYSQL_CLIENT_ID"
    }
    environment = {
        **base,
        "CHECK_REPORT": str(report),
        "SECUREMYSQL": str(Path(sys.executable).with_name("securemysql")),
        "PYTHON": sys.executable,
        **extra_environment,
    }
    result = subprocess.run(
        ["sh", str(EXAMPLES / "ci_gate.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return result, report


def test_ci_gate_passes_secure_server(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.set_require_secure_transport(True)

    result, report = _run_gate(sandbox, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Database gate passed (exit code 0" in result.stdout
    assert json.loads(report.read_text())["result"]["status"] == "pass"


def test_ci_gate_stops_on_posture_failure(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.set_require_secure_transport(False)

    result, report = _run_gate(sandbox, tmp_path)

    assert result.returncode == 16, result.stdout + result.stderr
    assert "security posture item failed" in result.stdout
    assert "posture require_secure_transport = OFF" in result.stdout
    assert json.loads(report.read_text())["result"]["failed_stage"] == "posture"


def test_ci_gate_stops_on_rejected_login(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.set_require_secure_transport(True)

    result, report = _run_gate(sandbox, tmp_path, AZURE_MYSQL_USER="no-such-user")

    assert result.returncode == 14, result.stdout + result.stderr
    assert "the server rejected the token" in result.stdout
    assert "fix: " in result.stdout
    assert json.loads(report.read_text())["result"]["failed_stage"] == "authentication"


def test_github_actions_snippet_runs_tested_gate() -> None:
    workflow = (EXAMPLES / "github_actions_gate.yml").read_text()

    assert "run: sh examples/ci_gate.sh" in workflow
    assert "CHECK_REPORT: check-report.json" in workflow
    assert "path: check-report.json" in workflow
    assert "needs: database-gate" in workflow


def test_readme_sandbox_snippet_runs(tmp_path: Path) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    start = readme.index("```python\nimport json, os, subprocess")
    snippet = readme[start + len("```python\n") : readme.index("```", start + 3)]
    script = tmp_path / "snippet.py"
    script.write_text(snippet + "\nprint(connection.cursor().execute('SELECT 1'))\n")
    environment = {
        **os.environ,
        "TMPDIR": str(tmp_path),  # a state file of its own, apart from any running sandbox
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            env=environment, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "securemysql", "sandbox", "down"],
            env=environment, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("1")
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
