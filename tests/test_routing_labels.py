"""Routing labels (issue 13), with real traffic: metadata -> rhgen generate -> haproxy -> backends on
127.0.0.x that answer with their name and the path they received.

One shared environment (one generate, one haproxy) holds every case that only sends requests:
  shop     web at / (and a named route `admin` on a second port), api at /api with strip,
           aliases www-shop (label) and *.shop (proxy metadata)
  exact    alias x.shop.dev.tld (an exact name inside the wildcard *.shop)
  deep     alias *.a.shop.dev.tld (a longer wildcard suffix)
  pathonly only a container at /docs: every other path is 503
  secure   basic auth (SHA-512 crypt of "pw" for alice)
  inside   allow 127.0.0.0/8 (the tests' clients) ; outside  allow 10.0.0.0/8, fd00::/8
  clash    two containers at /x, one with strip: the stack is skipped, the others serve
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.apps import App
from tests.support.haproxy import Haproxy
from tests.support.metadata import LABEL, MetadataServer, container
from tests.support.rhgen import make_target, run_rhgen
from tests.test_runtime_map import Setup

PW_HASH = "$6$JCFMSetK9o8L67aK$HQ3dr2XhSKDAA0DeBeGUlmnDViajGHbK.5X9UW5wML3S1/T6HYihlzlIhVK2C0hW9uePlUABTCVEmz7lT1ifz/"
NAMES = {
    "127.0.0.61": "shop-web", "127.0.0.62": "shop-api", "127.0.0.63": "exact-web", "127.0.0.64": "deep-web",
    "127.0.0.65": "pathonly-docs", "127.0.0.66": "secure-web", "127.0.0.67": "inside-web", "127.0.0.68": "outside-web",
    "127.0.0.69": "clash-a", "127.0.0.70": "clash-b",
}


def environment(ports: dict[str, int], admin_port: int) -> list[dict]:
    def app(stack, service, ip, **labels):
        return container(stack, service, ip, ports[ip], labels=labels, name=NAMES[ip])

    return [
        app("shop", "web", "127.0.0.61", **{f"{LABEL}.admin": str(admin_port), "rhgen.aliases": "www-shop"}),
        app("shop", "api", "127.0.0.62", **{"rhgen.path": "/api", "rhgen.path.strip": "true"}),
        app("exact", "web", "127.0.0.63"),
        app("deep", "web", "127.0.0.64"),
        app("pathonly", "docs", "127.0.0.65", **{"rhgen.path": "/docs"}),
        app("secure", "web", "127.0.0.66", **{"rhgen.auth": f"alice:{PW_HASH}"}),
        app("inside", "web", "127.0.0.67", **{"rhgen.allow": "127.0.0.0/8"}),
        app("outside", "web", "127.0.0.68", **{"rhgen.allow": "10.0.0.0/8, fd00::/8"}),
        app("clash", "a", "127.0.0.69", **{"rhgen.path": "/x"}),
        app("clash", "b", "127.0.0.70", **{"rhgen.path": "/x", "rhgen.path.strip": "true"}),
    ]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels")
    metadata_server = MetadataServer()
    apps = [App(name, ip, echo_path=True, keep_alive=False) for ip, name in NAMES.items()]
    admin = App("shop-web-admin", "127.0.0.61", echo_path=True, keep_alive=False)
    proxy = None
    try:
        metadata_server.set(
            environment({a.ip: a.port for a in apps}, admin.port),
            {"aliases": {"shop": ["*.shop"], "exact": ["x.shop.dev.tld"], "deep": ["*.a.shop.dev.tld"]}},
        )
        target = make_target(folder / "live", metadata_server)
        result = run_rhgen(["generate"], target.env, folder)
        assert result.returncode == 0, result.stderr
        proxy = Haproxy(target.folder, target.port, run_dir=folder, master=False).start()
        routes = run_rhgen(["routes", "--json"], target.env, folder)
        yield proxy, result, target, routes
    finally:
        if proxy:
            proxy.close()
        for a in [*apps, admin]:
            a.close()
        metadata_server.close()


@pytest.fixture
def proxy(shared):
    return shared[0]


@pytest.mark.parametrize("host", ["shop.dev.tld", "www-shop.dev.tld", "y.shop.dev.tld"])
@pytest.mark.parametrize("path, answer", [
    ("/", "shop-web /"), ("/apix", "shop-web /apix"), ("/about/api", "shop-web /about/api"),
    ("/api", "shop-api /"), ("/api/", "shop-api /"), ("/api/users?page=2", "shop-api /users?page=2"),
])
def test_two_service_stack_routes_by_path_prefix_with_strip_on_its_hosts(proxy, host, path, answer):
    assert proxy.get(host, path) == (200, answer)


def test_path_only_stack_answers_503_outside_its_prefix(proxy):
    assert proxy.get("pathonly.dev.tld", "/docs/intro") == (200, "pathonly-docs /docs/intro")  # no strip
    assert proxy.get("pathonly.dev.tld", "/")[0] == 503
    assert proxy.get("pathonly.dev.tld", "/docsx")[0] == 503


def test_named_route_reaches_the_second_port_at_route_dash_stack(proxy):
    assert proxy.get("admin-shop.dev.tld", "/api") == (200, "shop-web-admin /api")  # no path routes there
    assert proxy.get("shop.dev.tld", "/") == (200, "shop-web /")


@pytest.mark.parametrize("host, answer", [
    ("y.shop.dev.tld", "shop-web /"),  # wildcard, where nothing else matches
    ("z.y.shop.dev.tld", "shop-web /"),  # any depth under the suffix
    ("x.shop.dev.tld", "exact-web /"),  # the exact name beats the wildcard
    ("X.Shop.dev.tld:8080", "exact-web /"),
    ("b.a.shop.dev.tld", "deep-web /"),  # the longest wildcard suffix wins
    ("a.shop.dev.tld", "shop-web /"),  # *.a.shop covers what is under a.shop, not a.shop
])
def test_wildcard_hosts_exact_names_win_and_longest_suffix_wins(proxy, host, answer):
    assert proxy.get(host) == (200, answer)


@pytest.mark.parametrize("host", ["evilshop.dev.tld", "shop.dev.tld.evil.net", "a.evilshop.dev.tld", "xa.shop.dev.tld.x"])
def test_wildcard_holds_the_dot_boundary(proxy, host):
    assert proxy.get(host)[0] == 503


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_auth_answers_401_without_and_with_wrong_credentials_200_with_right_ones(proxy):
    assert proxy.get("secure.dev.tld")[0] == 401
    assert proxy.get("secure.dev.tld", headers=basic("alice", "wrong"))[0] == 401
    assert proxy.get("secure.dev.tld", headers=basic("bob", "pw"))[0] == 401
    assert proxy.get("secure.dev.tld", headers=basic("alice", "pw")) == (200, "secure-web /")


def test_allow_list_answers_403_to_other_clients_and_200_to_listed_ones(proxy):
    assert proxy.get("inside.dev.tld") == (200, "inside-web /")
    assert proxy.get("outside.dev.tld")[0] == 403


def test_contradictory_labels_skip_only_that_stack_with_one_warning_naming_both(shared, proxy):
    result = shared[1]
    warnings = [line for line in result.stderr.splitlines() if "clash" in line]
    assert len(warnings) == 1, result.stderr
    assert "'clash-a'" in warnings[0] and "'clash-b'" in warnings[0] and "strip" in warnings[0]
    assert proxy.get("clash.dev.tld", "/x")[0] == 503
    assert proxy.get("shop.dev.tld", "/api/x") == (200, "shop-api /x")


def test_routes_json_shows_path_route_auth_allow_but_never_hashes(shared):
    routes = shared[3]
    assert routes.returncode == 0, routes.stderr
    assert PW_HASH not in routes.stdout and "$6$" not in routes.stdout
    shown = json.loads(routes.stdout)
    by_host_path = {(r["host"], r["path"]): r for r in shown["routes"]}
    api = by_host_path[("shop.dev.tld", "/api")]
    assert (api["backend"], api["strip"], api["route"]) == ("shop_api", True, None)
    assert [s["container"] for s in api["servers"]] == ["shop-api"]
    assert by_host_path[("admin-shop.dev.tld", "/")]["route"] == "admin"
    assert by_host_path[("secure.dev.tld", "/")]["auth"] == ["alice"]
    assert by_host_path[("outside.dev.tld", "/")]["allow"] == ["10.0.0.0/8", "fd00::/8"]
    assert by_host_path[("pathonly.dev.tld", "/")]["backend"] is None  # 503
    assert any("clash" in s["what"] and "strip" in s["reason"] for s in shown["skipped"])


def test_routes_text_shows_paths_and_protections(shared, run_rhgen):
    target = shared[2]
    result = run_rhgen(["routes"], target.env)
    assert result.returncode == 0, result.stderr
    assert "shop.dev.tld/api  →  shop_api  (stack, strip)" in result.stdout
    assert "secure.dev.tld  →  secure  (stack, auth: alice)" in result.stdout
    assert "pathonly.dev.tld/  →  -  (stack, no container at /: 503)" in result.stdout
    assert "$6$" not in result.stdout


# --- what is refused --------------------------------------------------------------------------------


@pytest.mark.parametrize("labels, culprit", [
    ({"rhgen.auth": "alice:s3cr3t"}, "plain text is refused"),
    ({"rhgen.auth": "alice:$1$abc$def"}, "not a crypt(3) hash"),
    ({"rhgen.allow": "10.0.0.0/33"}, "not an IPv4 or IPv6 network"),
    ({"rhgen.allow": "10.0.0.0/8 evil"}, "not an IPv4 or IPv6 network"),
    ({"rhgen.path": "/a b"}, "not a path prefix"),
    ({"rhgen.path": "api"}, "not a path prefix"),
    ({"rhgen.path.strip": "yes"}, "not true or false"),
])
def test_refused_restriction_means_the_route_is_not_served(metadata_server, backend_servers, generate, haproxy,
                                                           labels, culprit):
    app = backend_servers.start("127.0.0.71", "guarded")
    plain = backend_servers.start("127.0.0.72", "plain")
    metadata_server.set([
        container("guarded", "web", "127.0.0.71", app.port, labels=labels, name="guarded-web-1"),
        container("plain", "web", "127.0.0.72", plain.port, name="plain-web-1"),
    ])
    result = generate()
    assert result.returncode == 0, result.stderr
    assert "'guarded-web-1'" in result.stderr and culprit in result.stderr
    assert "s3cr3t" not in result.stderr  # a refused auth label may hold a password: never shown
    haproxy.start()
    assert haproxy.get("guarded.dev.tld")[0] == 503
    assert app.hits == 0
    assert haproxy.get("plain.dev.tld") == (200, "plain")


@pytest.mark.parametrize("alias", ["*", "*.", "*.*.shop", "a*.shop"])
def test_bare_or_inner_wildcard_is_refused(metadata_server, backend_servers, generate, target, alias):
    app = backend_servers.start("127.0.0.73", "shop")
    metadata_server.set([container("shop", "web", "127.0.0.73", app.port, labels={"rhgen.aliases": f"ok,{alias}"})],
                        {"aliases": {"shop": [f"{alias}!"]}})
    result = generate()
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("is not a valid host name") == 2, result.stderr  # the label's and the metadata's
    assert f"alias {alias!r} of stack 'shop'" in result.stderr
    assert target.map.read_text().splitlines()[2:] == ["ok.dev.tld shop", "shop.dev.tld shop"]


# --- reload-free changes -------------------------------------------------------------------------


def test_wildcard_and_path_entries_change_through_the_runtime_api_without_a_reload(tmp_path):
    """Paths and wildcards live in domain.map beside the hosts: once the backends exist, adding or
    removing a wildcard is a map change that the runtime API applies."""
    sockets = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    setup = Setup(tmp_path, sockets)
    api = App("app1-api", "127.0.0.14", echo_path=True)
    try:
        setup.extra = [container("app1", "api", api.ip, api.port, labels={"rhgen.path": "/api"}, name="app1-api-1")]
        assert "; reloaded" in setup.change()  # a new backend: reload
        setup.haproxy.wait_routes("app1.dev.tld", "app1")
        before = setup.haproxy.processes()
        assert setup.haproxy.get("app1.dev.tld", "/api/x") == (200, "app1-api /api/x")

        setup.aliases = {"app1": ["www", "*.app1"]}
        assert "applied through the runtime API, no reload" in setup.change()
        assert setup.haproxy.get("x.app1.dev.tld", "/api/y") == (200, "app1-api /api/y")
        assert setup.haproxy.get("x.app1.dev.tld", "/") == (200, "app1")

        setup.aliases = {"app1": ["www"]}
        assert "applied through the runtime API, no reload" in setup.change()
        assert setup.haproxy.get("x.app1.dev.tld")[0] == 503
        assert setup.haproxy.processes() == before  # same reload counter, same worker
    finally:
        setup.close()
        api.close()
        shutil.rmtree(sockets, ignore_errors=True)


def test_seed_only_demo_renders_the_same_map_lines_backends_and_servers(demo, generate, target):
    result = generate()
    assert result.returncode == 0, result.stderr
    ports = demo.ports()
    assert target.map.read_text().splitlines()[2:] == [
        "app-r124.dev.tld app-r124", "app-r126.dev.tld app-r126", "app1.dev.tld app1",
        "someotheralias.dev.tld app1", "www.dev.tld app1",
    ]
    backends = [line.strip() for line in target.backends.read_text().splitlines()[2:] if line.strip()]
    names = [line for line in backends if line.startswith(("backend ", "# stack"))]
    assert names == ["# stack App-R124", "backend app-r124", "# stack app-r126", "backend app-r126",
                     "# stack app1", "backend app1"]
    servers = sorted(line.split()[2] for line in backends if line.startswith("server "))
    assert servers == sorted(f"{ip}:{ports[ip]}" for ip in ("127.0.0.11", "127.0.0.12", "127.0.0.21", "127.0.0.42"))
    assert all(line.startswith(("backend ", "# stack", "server ", "balance ")) for line in backends), backends


def test_strip_without_a_path_changes_nothing_and_contradicts_nothing():
    from rhgen.routing import build_routing
    from rhgen.sources.answers import source_data

    containers = [container("app", "web", "10.0.0.1", 80, name="app-web-1"),
                  container("app", "web", "10.0.0.2", 80, labels={"rhgen.path.strip": "true"}, name="app-web-2")]
    routing = build_routing(source_data(containers, {}, "test"), "dev.tld", LABEL)
    assert [(b.name, b.strip, len(b.servers)) for b in routing.backends] == [("app", False, 2)]
    assert routing.skipped == ()
