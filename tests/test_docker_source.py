"""RHGEN_SOURCE=docker: what a real daemon will not answer (server errors) and the settings checks.

Everything a real daemon does answer is tested against it in test_docker_real.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.fake_docker import DockerDaemon
from tests.support.net import free_port
from tests.support.rhgen import rhgen_env


@pytest.fixture
def sockets():
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def daemon(sockets):
    server = DockerDaemon(sockets / "docker.sock")
    yield server
    server.close()


def run(tmp_path: Path, daemon: DockerDaemon, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = rhgen_env(tmp_path, free_port(), **{"RHGEN_SOURCE": "docker", "DOCKER_HOST": daemon.url, **settings})
    return subprocess.run([sys.executable, "-m", "rhgen", *args], env=env, capture_output=True, text=True, timeout=30)


def test_a_daemon_error_is_reported(tmp_path, daemon):
    daemon.down = True
    result = run(tmp_path, daemon, "generate")
    assert result.returncode == 1
    assert "HTTP 500" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["/var/run/docker.sock", "http://x", "unix://relative.sock", "tcp://a b"])
def test_docker_host_must_be_unix_or_tcp(tmp_path, daemon, value):
    result = run(tmp_path, daemon, "generate", DOCKER_HOST=value)
    assert result.returncode == 2
    assert "DOCKER_HOST" in result.stderr


def test_docker_host_is_not_checked_for_other_sources(tmp_path):
    # Often set for the docker CLI on hosts that use another source.
    answers = tmp_path / "answers.json"
    answers.write_text('{"containers": []}')
    env = rhgen_env(tmp_path, free_port(), RHGEN_SOURCE="file", METADATA_FILE=str(answers), DOCKER_HOST="ssh://me@host")
    result = subprocess.run([sys.executable, "-m", "rhgen", "routes"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_disable_metadata_and_docker_source_contradict(tmp_path, daemon):
    result = run(tmp_path, daemon, "generate", DISABLE_METADATA="true", METADATA_FILE=str(tmp_path / "m.json"))
    assert result.returncode == 2
    assert "contradict" in result.stderr
