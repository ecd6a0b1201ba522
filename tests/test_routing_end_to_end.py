"""Real traffic: demo metadata -> rhgen generate -> haproxy -> backend HTTP servers, routed by Host header.

The tests that only send requests share one demo proxy (one generate, one haproxy) to stay fast;
they assert on differences of the backends' counters, never on totals another test could change.
"""

from __future__ import annotations

import pytest

from tests.support.apps import BackendServers, start_demo
from tests.support.haproxy import Haproxy
from tests.support.metadata import PROXY_LABEL, container, MetadataServer
from tests.support.rhgen import make_target, run_rhgen


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    metadata_server, backends = MetadataServer(), BackendServers()
    proxy = None
    try:
        start_demo(metadata_server, backends)
        target = make_target(folder / "live", metadata_server)
        result = run_rhgen(["generate"], target.env, folder)
        assert result.returncode == 0, result.stderr
        proxy = Haproxy(target.folder, target.port, run_dir=folder, master=False).start()
        yield proxy, backends, result
    finally:
        if proxy:
            proxy.close()
        backends.close()
        metadata_server.close()


@pytest.fixture
def proxy(shared):
    return shared[0]


@pytest.fixture
def backends(shared):
    return shared[1]


def bodies(proxy, host: str, times: int) -> list[str]:
    answers = [proxy.get(host) for _ in range(times)]
    assert all(status == 200 for status, _ in answers), answers
    return [body for _, body in answers]


def test_demo_summary_counts_hosts_backends_and_servers(shared):
    result = shared[2]
    assert result.stdout == "5 hosts → 3 backends, 4 servers; changed: backends.cfg, domain.map, haproxy.cfg\n"
    assert result.stderr == ""  # stopped and unhealthy containers are ordinary: no warning


def test_stack_name_routes_to_its_container(proxy):
    assert proxy.get("app-r126.dev.tld") == (200, "app-r126-web-2")


def test_requests_alternate_between_both_app1_containers(proxy):
    seen = bodies(proxy, "app1.dev.tld", 6)
    assert seen.count("app1-web-1") == seen.count("app1-web-2") == 3
    assert seen[0] != seen[1]


@pytest.mark.parametrize("alias", ["www.dev.tld", "someotheralias.dev.tld"])
def test_alias_routes_to_the_stack_it_belongs_to(proxy, alias):
    assert sorted(bodies(proxy, alias, 4)) == ["app1-web-1", "app1-web-1", "app1-web-2", "app1-web-2"]


@pytest.mark.parametrize("host", ["app-r124.dev.tld", "APP-R124.DEV.TLD", "App-R124.dev.tld"])
def test_upper_case_stack_is_reached_by_its_lower_case_host_in_any_case(proxy, host):
    assert proxy.get(host) == (200, "App-R124-web-1")


@pytest.mark.parametrize("host", ["app1.dev.tld:80", "app1.dev.tld:8080", "WWW.dev.tld:443"])
def test_host_header_with_port_routes_like_the_bare_host(proxy, host):
    status, body = proxy.get(host)
    assert status == 200
    assert body in {"app1-web-1", "app1-web-2"}


@pytest.mark.parametrize(
    "host",
    [
        "unknown.dev.tld",
        "app1.dev.tld.evil.net",
        "evil.net",
        "x.app1.dev.tld",
        "app1",
        "www",
        "app-r125.dev.tld",  # stopped: no backend at all
        "lb.dev.tld",  # running, but without the routing label
    ],
)
def test_unrouted_host_gets_503(proxy, backends, host):
    hits = {ip: server.hits for ip, server in backends.servers.items()}
    status, body = proxy.get(host)
    assert status == 503
    assert {ip: server.hits for ip, server in backends.servers.items()} == hits


def test_stopped_container_gets_no_traffic(proxy, backends):
    for host in ["app-r125.dev.tld", "app1.dev.tld", "app-r126.dev.tld", "app-r124.dev.tld"]:
        for _ in range(3):
            assert proxy.get(host)[1] != "app-r125-web-1"
    assert backends["127.0.0.31"].hits == 0


def test_unhealthy_container_gets_no_traffic(proxy, backends):
    healthy_before = backends["127.0.0.42"].hits
    assert bodies(proxy, "app-r126.dev.tld", 6) == ["app-r126-web-2"] * 6
    assert backends["127.0.0.41"].hits == 0
    assert backends["127.0.0.42"].hits == healthy_before + 6


def test_proxy_protocol_label_ends_the_server_line(proxy, backends):
    lines = [line.split() for line in (proxy.folder / "backends.cfg").read_text().splitlines() if line.strip().startswith("server ")]
    by_address = {line[2]: line[10:] for line in lines}  # after the health check's "check inter 1000 fall 2 rise 2"
    assert all(line[3:10] == ["check", "inter", "1000", "fall", "2", "rise", "2"] for line in lines)
    assert by_address[f"127.0.0.21:{backends['127.0.0.21'].port}"] == ["send-proxy"]
    assert by_address[f"127.0.0.11:{backends['127.0.0.11'].port}"] == []
    assert len(by_address) == 4


def test_backend_with_proxy_label_receives_a_proxy_header(proxy, backends):
    backend = backends["127.0.0.21"]
    before = len(backend.proxy_lines)
    assert proxy.get("app-r124.dev.tld") == (200, "App-R124-web-1")
    assert backend.errors == []
    assert len(backend.proxy_lines) == before + 1
    words = backend.proxy_lines[-1].split(" ")
    assert words[:4] == ["PROXY", "TCP4", "127.0.0.1", "127.0.0.1"]
    assert words[5] == str(proxy.port)  # the destination is haproxy's frontend


def test_only_the_labelled_container_gets_a_proxy_header(metadata_server, backend_servers, generate, haproxy):
    plain = backend_servers.start("127.0.0.51", "plain")  # would answer a PROXY line with 400
    proxied = backend_servers.start("127.0.0.52", "proxied", proxy_protocol=True)  # needs one
    metadata_server.set(
        [
            container("plain", "web", "127.0.0.51", plain.port),
            container("proxied", "web", "127.0.0.52", proxied.port, labels={PROXY_LABEL: "send-proxy"}),
            # only the configured label counts: the same value under another label is ignored
            container("other", "web", "127.0.0.51", plain.port, labels={"proxy": "send-proxy"}, name="other-1"),
        ]
    )
    assert generate().returncode == 0
    haproxy.start()
    assert haproxy.get("plain.dev.tld") == (200, "plain")
    assert haproxy.get("other.dev.tld") == (200, "plain")
    assert haproxy.get("proxied.dev.tld") == (200, "proxied")
    assert plain.hits == 2 and proxied.hits == 1
    assert proxied.errors == [] and len(proxied.proxy_lines) == 1


def test_regenerated_files_route_after_haproxy_restart(metadata_server, backend_servers, generate, haproxy):
    first = backend_servers.start("127.0.0.61", "first")
    second = backend_servers.start("127.0.0.62", "second")
    metadata_server.set([container("app", "web", "127.0.0.61", first.port)])
    assert generate().returncode == 0
    haproxy.start()
    assert haproxy.get("app.dev.tld") == (200, "first")
    assert haproxy.get("moved.dev.tld")[0] == 503

    metadata_server.set([container("moved", "web", "127.0.0.62", second.port)])
    metadata_server.set(metadata={"aliases": {"moved": ["app"]}})
    assert generate().returncode == 0
    haproxy.close()
    haproxy.start()
    assert haproxy.get("moved.dev.tld") == (200, "second")
    assert haproxy.get("app.dev.tld") == (200, "second")
