"""Every script in examples/ runs against the sandbox, so none of them rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
