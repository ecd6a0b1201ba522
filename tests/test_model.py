"""rhgen.routing.build_routing from small dicts: what routes, what is skipped and why."""

from __future__ import annotations

import random

import pytest

from tests.support.metadata import DOMAIN, LABEL, PROXY_LABEL, container
from rhgen.model import Incumbents, SourceData
from rhgen.routing import build_routing, incumbents_from
from rhgen.sources.answers import aliases_from, containers_from_json
from rhgen.render import environment
from rhgen.merge import load_settings


def routing_of(items, aliases=None, proxy_label=PROXY_LABEL, incumbents=Incumbents()):
    containers, skipped = containers_from_json(items)
    parsed, alias_skipped = aliases_from({} if aliases is None else {"aliases": aliases})
    return build_routing(SourceData(containers, parsed, skipped, alias_skipped), DOMAIN, LABEL, proxy_label, incumbents)


def live_files_of(routing) -> Incumbents:
    """The incumbents of the files this routing renders to (the bundled templates)."""
    env, settings = environment(), load_settings(None, {"STACK_DOMAIN": DOMAIN}, {})
    return incumbents_from(
        env.get_template("domain.map.j2").render(routing=routing, settings=settings).encode(),
        env.get_template("backends.cfg.j2").render(routing=routing, settings=settings).encode(),
    )


def hosts(routing) -> dict[str, str]:
    return {route.host: route.backend for route in routing.routes}


def reasons(routing) -> dict[str, str]:
    return {skipped.what: skipped.reason for skipped in routing.skipped}


def servers(routing, backend: str) -> list[str]:
    [match] = [b for b in routing.backends if b.name == backend]
    return [f"{s.address}:{s.port}" for s in match.servers]


@pytest.mark.parametrize("health", [None, "", "healthy", "updating-healthy"])
def test_routable_health_states_get_traffic(health):
    routing = routing_of([container("app1", "web", "10.0.0.1", 8080, health=health)])
    assert servers(routing, "app1") == ["10.0.0.1:8080"]
    assert routing.skipped == ()


@pytest.mark.parametrize("health", ["unhealthy", "initializing", "updating-unhealthy", "reinitializing", "Healthy"])
def test_other_health_states_get_no_traffic(health):
    routing = routing_of(
        [container("app1", "web", "10.0.0.1", 8080, health=health, name="sick"), container("app1", "web", "10.0.0.2", 8080)]
    )
    assert servers(routing, "app1") == ["10.0.0.2:8080"]
    [skipped] = routing.skipped
    assert (skipped.what, skipped.reason, skipped.warn) == ("container 'sick'", f"health_state is {health!r}", False)


@pytest.mark.parametrize("state", ["stopped", "starting", "stopping", "restarting", "Running"])
def test_containers_not_running_get_no_traffic(state):
    routing = routing_of([container("app1", "web", "10.0.0.1", 8080, state=state, name="c1")])
    assert routing.backends == () and routing.routes == ()
    assert [(s.reason, s.warn) for s in routing.skipped] == [(f"state is {state!r}", False)]


def test_stack_with_only_unroutable_containers_gets_no_host():
    routing = routing_of([container("app1", "web", "10.0.0.1", 8080, health="unhealthy")], aliases={"app1": ["www"]})
    assert hosts(routing) == {}


def test_containers_without_the_label_are_ignored_silently():
    routing = routing_of([container("db", "mysql", "10.0.0.1", None, labels={"map-public-https": "443"})])
    assert routing.backends == () and routing.skipped == ()


def test_upper_case_stack_routes_by_its_lower_case_name():
    routing = routing_of([container("App-R124", "web", "10.0.0.1", 8081)])
    assert hosts(routing) == {"app-r124.dev.tld": "app-r124"}
    assert routing.backends[0].stack == "App-R124"


def test_aliases_without_a_dot_get_the_domain_and_with_a_dot_are_full_host_names():
    routing = routing_of(
        [container("app1", "web", "10.0.0.1", 8080)],
        aliases={"app1": ["www", "shop.example.com", "WWW2.Example.COM.", " api "]},
    )
    assert hosts(routing) == {
        "app1.dev.tld": "app1",
        "www.dev.tld": "app1",
        "shop.example.com": "app1",
        "www2.example.com": "app1",
        "api.dev.tld": "app1",
    }
    assert {r.host: r.kind for r in routing.routes}["shop.example.com"] == "alias"


def test_a_single_alias_may_be_a_string():
    routing = routing_of([container("app1", "web", "10.0.0.1", 8080)], aliases={"app1": "www"})
    assert hosts(routing) == {"app1.dev.tld": "app1", "www.dev.tld": "app1"}


def test_alias_of_an_upper_case_stack_name_finds_its_backend():
    routing = routing_of([container("App-R124", "web", "10.0.0.1", 8081)], aliases={"App-R124": ["shop"]})
    assert hosts(routing)["shop.dev.tld"] == "app-r124"


def test_alias_of_an_unknown_stack_is_ignored():
    routing = routing_of([container("app1", "web", "10.0.0.1", 8080)], aliases={"ghost": ["www"]})
    assert hosts(routing) == {"app1.dev.tld": "app1"}
    [skipped] = routing.skipped
    assert (skipped.what, skipped.reason, skipped.warn) == ("alias 'www' of stack 'ghost'", "stack has no routed containers", False)


def test_alias_colliding_with_another_stacks_host_is_skipped():
    routing = routing_of(
        [container("app1", "web", "10.0.0.1", 8080), container("app2", "web", "10.0.0.2", 8080)],
        aliases={"app1": ["app2", "app2.dev.tld", "www"]},
    )
    assert hosts(routing) == {"app1.dev.tld": "app1", "app2.dev.tld": "app2", "www.dev.tld": "app1"}
    assert reasons(routing) == {
        "alias 'app2' of stack 'app1'": "host app2.dev.tld already routes to app2",
        "alias 'app2.dev.tld' of stack 'app1'": "host app2.dev.tld already routes to app2",
    }
    assert all(s.warn for s in routing.skipped)


def test_alias_claimed_by_two_stacks_goes_to_neither_while_nobody_serves_it():
    items = [container("app1", "web", "10.0.0.1", 8080), container("app2", "web", "10.0.0.2", 8080)]
    first = routing_of(items, aliases={"app1": ["www"], "app2": ["www"]})
    second = routing_of(items[::-1], aliases={"app2": ["www"], "app1": ["www"]})
    assert first == second
    assert "www.dev.tld" not in hosts(first)
    assert reasons(first) == {
        "alias 'www' of stack 'app1'": "host www.dev.tld is also claimed by alias 'www' of stack 'app2'; "
        "none of them serves it yet, so none gets it",
        "alias 'www' of stack 'app2'": "host www.dev.tld is also claimed by alias 'www' of stack 'app1'; "
        "none of them serves it yet, so none gets it",
    }


def test_alias_claimed_twice_stays_with_the_stack_that_serves_it():
    items = [container("app1", "web", "10.0.0.1", 8080), container("app2", "web", "10.0.0.2", 8080)]
    served = live_files_of(routing_of(items, aliases={"app2": ["www"]}))
    routing = routing_of(items, aliases={"app1": ["www"], "app2": ["www"]}, incumbents=served)
    assert hosts(routing)["www.dev.tld"] == "app2"
    assert reasons(routing) == {
        "alias 'www' of stack 'app1'": "host www.dev.tld is also claimed by alias 'www' of stack 'app2', which serves it now"
    }


def test_new_stack_named_like_a_served_alias_does_not_take_it_over():
    app1 = [container("app1", "web", "10.0.0.1", 8080)]
    served = live_files_of(routing_of(app1, aliases={"app1": ["www"]}))
    routing = routing_of(app1 + [container("www", "web", "10.0.0.9", 8080, name="intruder")], {"app1": ["www"]}, incumbents=served)
    assert hosts(routing) == {"app1.dev.tld": "app1", "www.dev.tld": "app1"}
    assert reasons(routing) == {
        "container 'intruder'": "host www.dev.tld of stack 'www' is also claimed by alias 'www' of stack 'app1', which serves it now"
    }


@pytest.mark.parametrize("alias", ["", "*", "*.", "a..b", "bad_name", "-x", "x" * 64, "ex ample.com", "münchen.de"])
def test_alias_that_is_no_host_name_is_skipped(alias):
    routing = routing_of([container("app1", "web", "10.0.0.1", 8080)], aliases={"app1": [alias]})
    assert hosts(routing) == {"app1.dev.tld": "app1"}
    [skipped] = routing.skipped
    assert skipped.what == f"alias {alias!r} of stack 'app1'"
    assert skipped.reason.endswith("is not a valid host name") and skipped.warn


@pytest.mark.parametrize(
    "aliases, what, reason",
    [
        (["www"], "metadata aliases", "is not a mapping of stack: [names]"),
        ("www", "metadata aliases", "is not a mapping of stack: [names]"),
        ({"app1": 5}, "aliases of 'app1'", "is not a list of names"),
        ({"app1": {"www": 1}}, "aliases of 'app1'", "is not a list of names"),
        ({"app1": [5, "www"]}, "alias 5 of stack 'app1'", "is not a string"),
    ],
)
def test_malformed_aliases_are_skipped_not_fatal(aliases, what, reason):
    routing = routing_of([container("app1", "web", "10.0.0.1", 8080)], aliases=aliases)
    assert reasons(routing) == {what: reason}
    assert hosts(routing) == {"app1.dev.tld": "app1", **({"www.dev.tld": "app1"} if what.startswith("alias 5") else {})}


def test_two_new_stacks_differing_only_in_case_both_wait_with_a_warning():
    items = [container("app1", "web", "10.0.0.1", 8080, name="lower"), container("App1", "web", "10.0.0.2", 8080, name="upper")]

    routing = routing_of(items)

    assert hosts(routing) == {}
    assert reasons(routing) == {
        "container 'lower'": "stack 'app1' has the same host name as stack 'App1'; none of them serves it yet, so none gets it",
        "container 'upper'": "stack 'App1' has the same host name as stack 'app1'; none of them serves it yet, so none gets it",
    }
    assert all(s.warn for s in routing.skipped)
    assert routing_of(items[::-1]) == routing  # the same whatever the order


def test_new_stack_cannot_take_the_host_of_a_served_stack_whatever_its_name_sorts():
    """Issue 17: a new stack APP1 took app1.dev.tld (and its aliases) from app1, because 'APP1' < 'app1'."""
    app1 = [container("app1", "web", "10.0.0.1", 8080, name="app1-web-1"), container("app1", "api", "10.0.0.3", 8080)]
    served = live_files_of(routing_of(app1, aliases={"app1": ["www"]}))
    impostor = container("APP1", "web", "10.0.0.66", 8080, name="impostor")

    routing = routing_of(app1 + [impostor], aliases={"app1": ["www"], "APP1": ["shop"]}, incumbents=served)

    assert hosts(routing) == {"app1.dev.tld": "app1", "www.dev.tld": "app1"}
    assert servers(routing, "app1") == ["10.0.0.3:8080", "10.0.0.1:8080"]
    assert reasons(routing)["container 'impostor'"] == "stack 'APP1' has the same host name as stack 'app1', which serves it now"
    assert "container 'app1-web-1'" not in reasons(routing)


@pytest.mark.parametrize(
    "ip, address",
    [("fd00::1", "[fd00::1]"), ("FD00:0:0::1", "[fd00::1]"), ("::1", "[::1]"), ("10.0.0.1", "10.0.0.1")],
)
def test_ip_address_is_written_the_way_haproxy_reads_it(ip, address):
    routing = routing_of([container("app1", "web", ip, 8080)])
    assert servers(routing, "app1") == [f"{address}:8080"]


def test_ipv6_server_renders_in_brackets():
    routing = routing_of([container("app1", "web", "fd00::1", 8080, labels={PROXY_LABEL: "send-proxy-v2"})])
    settings = load_settings(None, {"STACK_DOMAIN": DOMAIN}, {})
    text = environment().get_template("backends.cfg.j2").render(routing=routing, settings=settings)
    [line] = [line.strip() for line in text.splitlines() if line.strip().startswith("server ")]
    assert line.endswith(" [fd00::1]:8080 check inter 1000 fall 2 rise 2 send-proxy-v2")


def test_address_from_ips_when_primary_ip_is_missing():
    item = container("app1", "web", "10.0.0.1", 8080)
    item["primary_ip"] = None
    item["ips"] = ["10.0.0.9", "10.0.0.10"]
    assert servers(routing_of([item]), "app1") == ["10.0.0.9:8080"]


@pytest.mark.parametrize(
    "ip, shown", [(None, "None"), ("", "None"), ("10.0.0.256", "'10.0.0.256'"), ("host.local", "'host.local'"),
                  ("10.0.0.1 # x", "'10.0.0.1 # x'"), ("fd00::1%eth0", "'fd00::1%eth0'"),
                  # Python's ipaddress takes anything after % as a scope id: it must not reach haproxy.cfg
                  ("fe80::1%x\n    server injected 10.9.9.9:80", "'fe80::1%x\\n    server injected 10.9.9.9:80'")],
)
def test_container_without_a_usable_ip_is_skipped_with_a_warning(ip, shown):
    item = container("app1", "web", "10.0.0.1", 8080, name="c1")
    item["primary_ip"], item["ips"] = ip, []
    routing = routing_of([item])
    assert routing.backends == ()
    assert reasons(routing) == {"container 'c1'": f"primary_ip {shown} is not an IP address"}
    assert routing.skipped[0].warn


def _without(key):
    item = container("app1", "web", "10.0.0.1", 8080, name="c1")
    del item[key]
    return item


def _with(**fields):
    item = container("app1", "web", "10.0.0.1", 8080, name="c1")
    item.update(fields)
    return item


@pytest.mark.parametrize(
    "item, what, reason",
    [
        ("app1", "containers[0]", "is a str, not an object"),
        (None, "containers[0]", "is a NoneType, not an object"),
        ([1, 2], "containers[0]", "is a list, not an object"),
        (_with(labels=[LABEL]), "container 'c1'", "labels is not an object"),
        (_with(labels="map-public-http=80"), "container 'c1'", "labels is not an object"),
        (_without("uuid"), "container 'c1'", "has no uuid"),
        (_with(uuid=""), "container 'c1'", "has no uuid"),
        (_with(uuid=7), "container 'c1'", "has no uuid"),
        (_without("stack_name"), "container 'c1'", "has no stack_name"),
        (_without("service_name"), "container 'c1'", "has no service_name"),
        (_without("state"), "container 'c1'", "has no state"),
        (_with(health_state=["healthy"]), "container 'c1'", "health_state is not a string"),
        ({**_without("name"), "uuid": ""}, "container 'containers[0]'", "has no uuid"),
    ],
)
def test_malformed_container_is_skipped_with_a_reason_naming_it(item, what, reason):
    good = container("app2", "web", "10.0.0.2", 8080)
    routing = routing_of([item, good])
    assert reasons(routing) == {what: reason}
    assert hosts(routing) == {"app2.dev.tld": "app2"}


def test_same_content_in_any_order_gives_the_same_model():
    items = [
        container("app1", "web", "10.0.0.1", 8080),
        container("app1", "web", "10.0.0.2", 8080),
        container("app1", "api", "10.0.0.3", 9000),
        container("app2", "web", "10.0.0.4", 8080, labels={PROXY_LABEL: "send-proxy"}),
        container("app3", "web", "10.0.0.5", "x"),
        "garbage",
    ]
    aliases = {"app1": ["www", "b.example.com", "a"], "app2": ["www", "two"]}
    expected = routing_of(items, aliases)
    shuffler = random.Random(7)
    for _ in range(20):
        shuffled = items[:]
        shuffler.shuffle(shuffled)
        shuffled_aliases = {k: shuffler.sample(v, len(v)) for k, v in shuffler.sample(list(aliases.items()), 2)}
        routing = routing_of(shuffled, shuffled_aliases)
        assert (routing.backends, routing.routes) == (expected.backends, expected.routes)
        assert sorted(s.reason for s in routing.skipped) == sorted(s.reason for s in expected.skipped)
    assert [b.name for b in expected.backends] == ["app1", "app2"]
    # servers in (service, uuid) order: the api service before web
    assert [s.address for s in expected.backends[0].servers][0] == "10.0.0.3"


def test_duplicate_uuid_in_one_service_is_skipped_both_while_neither_serves():
    items = [
        container("app1", "web", "10.0.0.1", 8080, name="b", uuid="same"),
        container("app1", "web", "10.0.0.2", 8080, name="a", uuid="same"),
    ]
    routing = routing_of(items)
    assert routing.backends == ()
    assert reasons(routing) == {
        "container 'a'": "server name web-same is also claimed by container 'b'; none of them serves it yet, so none gets it",
        "container 'b'": "server name web-same is also claimed by container 'a'; none of them serves it yet, so none gets it",
    }


def test_container_with_a_copied_uuid_cannot_replace_the_served_one():
    """Issue 17: of two containers with one uuid, the name sorting first won: an impostor could replace a server."""
    real = container("app1", "web", "10.0.0.1", 8080, name="real", uuid="u1")
    served = live_files_of(routing_of([real]))
    impostor = container("app1", "web", "10.0.0.66", 8080, name="aaa-impostor", uuid="u1")

    routing = routing_of([impostor, real], incumbents=served)

    assert servers(routing, "app1") == ["10.0.0.1:8080"]
    assert reasons(routing) == {
        "container 'aaa-impostor'": "server name web-u1 is also claimed by container 'real', which serves it now"
    }


def test_a_stack_restarting_all_its_containers_keeps_its_host_from_a_newcomer():
    """No takeover in the moment a served stack has no running container (a redeploy)."""
    served = live_files_of(routing_of([container("app1", "web", "10.0.0.1", 8080)]))
    restarting = container("app1", "web", "10.0.0.1", 8080, state="starting")
    routing = routing_of([restarting, container("APP1", "web", "10.0.0.66", 8080, name="impostor")], incumbents=served)
    assert hosts(routing) == {}
    assert reasons(routing)["container 'impostor'"] == "stack 'APP1' has the same host name as stack 'app1', which serves it now"
