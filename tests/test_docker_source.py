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


# --- faults of the daemon's answer: the one list call per run (engine_http.py) --------------------
# The daemon over tcp://, played by the metadata test server answering /containers/json as told.

LIST = "/containers/json?all=1"  # what rhgen asks with RANCHER_LABEL empty (no label filter)
BIG = b"[" + b" " * 10_000 + b"]"
DAEMON_FAULTS = {  # name -> (the answer, env for the run, the words the error line must hold)
    "HTTP 503": ({"status": 503, "body": b'{"message": "starting"}'}, {}, "HTTP 503"),
    "HTTP 404": ({"status": 404, "body": b'{"message": "page not found"}'}, {}, "HTTP 404"),
    "not JSON": ({"body": b"<html><body>proxy</body></html>"}, {}, "answer is not JSON (starts with '<html>"),
    "a mapping, not a list": ({"body": b'{"message": "hello"}'}, {}, "/containers/json is not a list"),
    "hangs": ({"hang": True}, {"RHGEN_READ_TIMEOUT": "0.3"}, "timed out"),
    "trickles": ({"body": b"[]" + b" " * 100, "drip": 0.02}, {"RHGEN_READ_TIMEOUT": "0.5"},
                 "answer took longer than the read timeout"),
    "cut short": ({"body": BIG, "cut": 100}, {}, "answer cut short"),
    "over the cap (Content-Length)": ({"body": BIG}, {"RHGEN_MAX_ANSWER_BYTES": "4096"},
                                      "answer of 10002 bytes is over the 4096-byte cap"),
    "over the cap (chunked)": ({"body": BIG, "chunked": True}, {"RHGEN_MAX_ANSWER_BYTES": "4096"},
                               "answer is over the 4096-byte cap"),
}


@pytest.mark.parametrize("fault", DAEMON_FAULTS)
def test_a_daemon_answer_that_cannot_be_used_is_one_error_line(tmp_path, metadata_server, fault):
    answer, env, words = DAEMON_FAULTS[fault]
    metadata_server.answer(LIST, **answer)
    host = metadata_server.host.removeprefix("http://")
    live = tmp_path / "live"
    live.mkdir()
    env = rhgen_env(live, free_port(), RHGEN_SOURCE="docker", DOCKER_HOST=f"tcp://{host}", RANCHER_LABEL="", **env)
    result = subprocess.run([sys.executable, "-m", "rhgen", "generate"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"rhgen: error: docker tcp://{host}")
    assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert metadata_server.paths() == [LIST]
    assert list(live.iterdir()) == []


def test_a_failing_daemon_is_tried_again_within_the_bound(tmp_path, metadata_server):
    metadata_server.answer(LIST, status=503, body=b"{}")
    host = metadata_server.host.removeprefix("http://")
    env = rhgen_env(tmp_path, free_port(), RHGEN_SOURCE="docker", DOCKER_HOST=f"tcp://{host}", RANCHER_LABEL="",
                    RHGEN_RETRIES="2")
    result = subprocess.run([sys.executable, "-m", "rhgen", "generate"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("/containers/json: HTTP 503 after 3 tries")
    tries = metadata_server.requests_to(LIST)
    assert len(tries) == 3 and 0.2 <= tries[1].time - tries[0].time < 0.75
