"""Deploys without failed requests: health checks take a dead server out whatever the source says,
and only requests that never reached a server are retried (on another one).

Real haproxy on the generated files, real HTTP backends on 127.0.0.x, rhgen as a subprocess."""

from __future__ import annotations

import time

import pytest

from tests.support.metadata import container
from tests.support.net import get

INTER_MS, FALL = 200, 2
FAST_CHECKS = {"RHGEN_CHECK_INTERVAL": str(INTER_MS), "RHGEN_CHECK_FALL": str(FALL)}


@pytest.mark.parametrize("failure", ["stops", "hangs"])
def test_a_server_that_stops_answering_gets_no_requests_within_fall_times_inter(
    failure, metadata_server, backend_servers, generate, haproxy, target, reliability
):
    # "stops": its port refuses (a TCP check sees it); "hangs": the port accepts and nothing answers,
    # which only an HTTP check sees (the kernel completes the TCP handshake of a hung process).
    labels = {"rhgen.healthcheck": "/healthz"} if failure == "hangs" else {}
    a = backend_servers.start("127.0.0.11", "a")
    b = backend_servers.start("127.0.0.12", "b")
    metadata_server.set([
        container("app1", "web", a.ip, a.port, labels=labels, name="app1-web-1"),
        container("app1", "web", b.ip, b.port, labels=labels, name="app1-web-2"),
    ])
    # No retries: the health check alone must keep requests away from b.
    env = {**FAST_CHECKS, "RHGEN_SERVER_RETRIES": "0"}
    assert generate(**env).returncode == 0
    haproxy.start()
    assert sorted(haproxy.get("app1.dev.tld")[1] for _ in range(4)) == ["a", "a", "b", "b"]

    if failure == "stops":
        b.close()
        hung = None
        time.sleep(FALL * INTER_MS / 1000 + 0.5)
    else:
        hung = backend_servers.freeze(b.ip)
        time.sleep(FALL * 2 * INTER_MS / 1000 + 0.5)  # each check waits up to inter for its answer
    try:
        answers = [haproxy.get("app1.dev.tld") for _ in range(10)]
    finally:
        if hung:
            hung.close()
    assert answers == [(200, "a")] * 10
    # The source still lists both servers: the health check alone took b out.
    again = generate(**env)
    assert again.returncode == 0 and "changed" not in again.stdout
    assert target.backends.read_text().count(f"{b.ip}:{b.port}") == 1
    reliability("Faults of the backends", f"a server {failure} while the source still lists it", held="no request after fall x inter")


def test_an_http_health_check_path_from_the_label_takes_out_a_failing_server(
    metadata_server, backend_servers, generate, haproxy, target
):
    a = backend_servers.start("127.0.0.11", "a")
    b = backend_servers.start("127.0.0.12", "b")
    b.status["/healthz"] = 503  # b still answers /, but says it is not ready
    label = {"rhgen.healthcheck": "/healthz"}
    metadata_server.set([
        container("app1", "web", a.ip, a.port, labels=label, name="app1-web-1"),
        container("app1", "web", b.ip, b.port, labels=label, name="app1-web-2"),
    ])
    assert generate(**FAST_CHECKS).returncode == 0
    haproxy.start()
    time.sleep((FALL + 1) * INTER_MS / 1000)
    assert [haproxy.get("app1.dev.tld") for _ in range(6)] == [(200, "a")] * 6
    assert "/healthz" in a.paths
    assert "/healthz" in b.paths and "/" not in b.paths


def test_a_bad_health_check_label_skips_the_container_with_a_warning(metadata_server, generate, target):
    metadata_server.set([
        container("app1", "web", "127.0.0.11", 8080, labels={"rhgen.healthcheck": "/ok now"}, name="app1-web-1"),
        container("app1", "web", "127.0.0.12", 8080, labels={"rhgen.healthcheck": "/ok"}, name="app1-web-2"),
    ])
    result = generate()
    assert result.returncode == 0, result.stderr
    assert "container 'app1-web-1': label rhgen.healthcheck='/ok now' is not a URL path (/healthz); skipped" in result.stderr
    backends = target.backends.read_text()
    assert "127.0.0.11" not in backends and "uri /ok ver HTTP/1.1 hdr Host app1.dev.tld" in backends


def test_a_request_sent_to_an_address_that_answers_nothing_is_retried_on_another_server_in_time(
    metadata_server, backend_servers, generate, haproxy, reliability
):
    # A container gone (docker rm -f, a crash) leaves an address where a SYN gets no answer; until the
    # source says so, round robin still sends requests there. Each must reach the live server within
    # a client's patience (4 s here): after RHGEN_SERVER_CONNECT_TIMEOUT (2 s), not haproxy's old 5 s.
    live = backend_servers.start("127.0.0.11", "live")
    leaving = backend_servers.start("127.0.0.12", "leaving")
    metadata_server.set([
        container("app1", "web", live.ip, live.port, name="app1-web-1"),
        container("app1", "web", leaving.ip, leaving.port, name="app1-web-2"),
    ])
    assert generate(RHGEN_HEALTH_CHECKS="false").returncode == 0  # no check takes the server out first
    haproxy.start()
    held = leaving.vanish()
    try:
        answers = [get(haproxy.port, "app1.dev.tld", timeout=4) for _ in range(4)]  # most of them meet the gone address
    finally:
        for sock in held:
            sock.close()
    assert answers == [(200, "live")] * 4
    reliability("Faults of the backends", "a server's address answers nothing (container gone, not yet removed)",
                held="retried on another server after the 2 s connect timeout, within a client's 4 s: 0 failed")


def test_only_requests_that_never_reached_a_server_are_retried(
    metadata_server, backend_servers, generate, haproxy, reliability
):
    live = backend_servers.start("127.0.0.11", "live")
    crashing = [backend_servers.start(ip, ip) for ip in ("127.0.0.21", "127.0.0.22")]
    for server in crashing:
        server.drop = True  # reads the request, counts it, closes without an answer
    metadata_server.set([
        container("app1", "web", live.ip, live.port, name="app1-web-1"),
        container("app1", "web", "127.0.0.12", 9, name="app1-web-2"),  # refuses every connection
        *(container("app2", "web", s.ip, s.port, name=f"app2-web-{i}") for i, s in enumerate(crashing)),
    ])
    # Checks off: the retry alone must save the requests sent to the refusing server.
    assert generate(RHGEN_HEALTH_CHECKS="false").returncode == 0
    haproxy.start()

    assert [haproxy.get("app1.dev.tld") for _ in range(20)] == [(200, "live")] * 20
    status, _ = haproxy.get("app2.dev.tld")
    assert status == 502
    assert sum(s.hits for s in crashing) == 1  # received once, never sent again
    reliability("Faults of the backends", "a server refuses connections / a server drops a request it received", 2,
                held="refused: retried elsewhere, 0 failed; received: sent exactly once")
