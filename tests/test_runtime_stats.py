"""Stats page, Prometheus metrics and logs of the running proxy (ENABLE_STATS, SYSLOG_HOST)."""

from __future__ import annotations

import base64
import http.client
import socket
import subprocess

import pytest

from tests.support.apps import App
from tests.support.metadata import container, write_metadata_file
from tests.support.net import closing_all, free_port, get, routes_to, wait_for
from tests.support.rhgen import ENTRYPOINT, entrypoint_env


@pytest.fixture
def env(tmp_path, socket_dir):
    """A file metadata source routing app1 to a real backend; an unprivileged HTTP port."""
    backend_port = free_port("127.0.0.11")
    metadata_file = tmp_path / "metadata.json"
    write_metadata_file(metadata_file, [container("app1", "web", "127.0.0.11", backend_port, name="app1-web-1")])
    environment = entrypoint_env(
        tmp_path, socket_dir, free_port(), DISABLE_METADATA="true", METADATA_FILE=str(metadata_file)
    )
    with closing_all(App("app1\n", "127.0.0.11", backend_port)):
        yield environment


def stats_get(port: int, path: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def start(procs, env):
    proc = procs.spawn(["bash", str(ENTRYPOINT)], env, "entrypoint")
    wait_for(routes_to(int(env["HTTP_PORT"]), "app1.dev.tld", "app1\n"), 15, what="app1 routed")
    return proc


def test_stats_page_and_metrics_answer_only_with_the_password(procs, env):
    port = free_port()
    proc = start(procs, {**env, "ENABLE_STATS": "true", "STATS_PORT": str(port),
                         "STATS_USERNAME": "ops", "STATS_PASSWORD": "s3cret-pw"})
    for path in ("/", "/metrics"):
        assert stats_get(port, path)[0] == 401
        assert stats_get(port, path, ("ops", "wrong"))[0] == 401
    status, page = stats_get(port, "/", ("ops", "s3cret-pw"))
    assert status == 200 and "Statistics Report" in page
    status, metrics = stats_get(port, "/metrics", ("ops", "s3cret-pw"))
    assert status == 200
    assert "haproxy_process_uptime_seconds" in metrics
    assert 'haproxy_backend_status{proxy="app1",state="UP"} 1' in metrics
    assert "INSECURE" not in proc.log()
    # Without SYSLOG_HOST every request is logged on stdout.
    wait_for(lambda: '"GET /metrics HTTP/1.1"' in proc.stdout.read_text(), 5, what="request logged on stdout")


def test_default_stats_password_is_warned_about_by_the_entrypoint_and_every_generate(procs, env):
    proc = start(procs, {**env, "ENABLE_STATS": "true", "STATS_PORT": str(free_port())})
    wait_for(lambda: proc.stderr.read_text().count("rhgen: warning: INSECURE: STATS_PASSWORD") >= 2, 5,
               what="rhgen's warning at the first run and the next scheduled one")
    assert "entrypoint: WARNING" not in proc.stderr.read_text()  # said once, by rhgen


def test_empty_stats_password_is_a_settings_error_and_nothing_starts(procs, env):
    bad = {**env, "ENABLE_STATS": "true", "STATS_PASSWORD": ""}
    result = subprocess.run(["rhgen", "generate"], env=bad, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "STATS_PASSWORD is empty: ENABLE_STATS needs a user name and a password" in result.stderr

    proc = procs.spawn(["bash", str(ENTRYPOINT)], bad, "entrypoint")
    assert proc.popen.wait(timeout=15) == 2
    assert "a setting is wrong" in proc.log()
    assert procs.leftovers() == []


def test_logs_go_to_the_syslog_host_when_set(procs, env):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as syslog:
        syslog.bind(("127.0.0.1", 0))
        syslog.settimeout(5)
        proc = start(procs, {**env, "SYSLOG_HOST": f"127.0.0.1:{syslog.getsockname()[1]}",
                             "SYSLOG_FACILITY": "local3"})
        assert get(int(env["HTTP_PORT"]), "app1.dev.tld", "/syslog-probe") == (200, "app1\n")
        received = []
        while not any(b'"GET /syslog-probe HTTP/1.1"' in line for line in received):
            received.append(syslog.recv(65536))  # raises TimeoutError when nothing comes
    line = next(line for line in received if b"/syslog-probe" in line)
    assert line.startswith(b"<158>")  # local3 (19) * 8 + info (6)
    assert b"app1/" in line  # the backend that served it
    assert b"/syslog-probe" not in proc.stdout.read_bytes()
