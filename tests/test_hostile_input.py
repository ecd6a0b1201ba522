"""Hostile input: whatever the metadata holds, the rendered files hold only what the templates put there.

Property tests over the pure stages (source_data -> build_routing -> render_all), in-process so
each property runs 1,000 examples fast; the real `haproxy -c` checks a smaller sample, and a
real haproxy answers a handful of crafted Host headers. Every generated environment mixes
containers known to be valid (stacks named valid-*) with hostile ones: the valid ones must
still be routed, exactly; the hostile ones are routed only when valid, else skipped with a
one-line reason, and never add a line, a keyword or a map entry.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import subprocess
import tempfile
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings as hypothesis_settings, strategies as st

from tests.support.metadata import DOMAIN, LABEL, PROXY_LABEL, container
from tests.support.net import raw_request
from rhgen import render
from rhgen.errors import RhgenError
from rhgen.model import PROXY_KEYWORDS, ROUTABLE_HEALTH, Routing, SourceData
from rhgen.routing import build_routing, incumbents_from
from rhgen.names import is_hostname
from rhgen.merge import load_settings
from rhgen.sources.answers import source_data

HOSTILE = "Hostile input"

# Rendering builds a Jinja2 environment per call (templates read and compiled each time): right
# for a run, too slow for 1,000 examples. Jinja2 still checks template mtimes in a cached one.
_environment = functools.lru_cache(maxsize=4)(render.environment)


@pytest.fixture(autouse=True)
def cached_templates(monkeypatch):
    monkeypatch.setattr(render, "environment", _environment)


# --- text from wide alphabets --------------------------------------------------------------------

NASTY = [
    "", " ", "\t", "\n", "\r\n", "#", "# comment", "%[req.hdr(host)]", "%[", "\"", "'", "\\", ";", "{", "}",
    "\x00", "\x7f", "\u2028", "\x85", "\ufeff", "é", "İ", "ı", "ſ", "\u212a", "K", "ß", "ﬁ", "٣", "८०", "🙂",
    "backend evil", "\nbackend evil\n    server s 127.0.0.99:80", "server x 127.0.0.99:80", "app1.dev.tld app1",
    "use_backend", "send-proxy", "check", "a" * 64, "b" * 300, "c" * 5000, "app1", "APP1", "App1.", "app1.dev.tld.evil.net",
    "evil.net", "*.dev.tld", ".", "..", "-", "127.0.0.1", "::1", "fe80::1%eth0", "0.0.0.0", "80", "65536", "8080 check",
]

nasty_fragment = st.one_of(
    st.sampled_from(NASTY),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12),
    st.text(alphabet="aZz09-_.: \t\n\r#%[](){}\"'\\;/@\x00\x7fK\u212a", max_size=12),
)
nasty_text = st.lists(nasty_fragment, min_size=1, max_size=3).map("".join)
dns_label = st.text(alphabet="abcxyz019-", min_size=1, max_size=10).map(lambda s: s.strip("-") or "x")
ascii_case = st.sampled_from([str.lower, str.upper, str.title, lambda s: s])
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), nasty_text)
json_value = st.one_of(json_scalar, st.lists(json_scalar, max_size=2), st.dictionaries(nasty_text, json_scalar, max_size=2))
anything = st.one_of(nasty_text, json_value, dns_label)


def ips() -> st.SearchStrategy[str]:
    # 127.250.0.0/16 is the impostors' (impostors_of): no valid container is given one of those.
    return st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.builds(lambda a, b: f"127.{a}.{b}.1", st.integers(0, 255), st.integers(0, 255)),
    ).filter(lambda ip: not ip.startswith("127.250."))


def not_valid_namespace(value: Any) -> Any:
    """Keep hostile names out of the valid-* namespace, so they cannot legitimately win a name."""
    if isinstance(value, str) and "valid" in value.lower():
        return value.lower().replace("valid", "hostile")
    return value


# --- environments --------------------------------------------------------------------------------


@dataclass
class Environment:
    containers: list[Any]
    metadata: Any
    routes: set[tuple[str, str]] = field(default_factory=set)  # (host, backend) the valid items must get
    servers: dict[str, set[str]] = field(default_factory=dict)  # backend -> server lines the valid items must get


# Strategies are built once, here: building them inside the draws costs more than the draws.
MISSING = object()
HEALTHY = st.sampled_from(sorted(ROUTABLE_HEALTH, key=str))
PROXY_VALUES = st.sampled_from(("",) + PROXY_KEYWORDS)
EXTRA_LABELS = st.dictionaries(nasty_text.map(lambda s: not_valid_namespace(s)), nasty_text, max_size=1)
PORTS = st.integers(1, 65535)
IPS = ips()
HOSTILE_KIND = st.sampled_from(["not an object", "wild object", "mutated valid", "mutated valid", "mutated valid"])
NOT_AN_OBJECT = st.one_of(json_scalar, st.lists(json_scalar, max_size=3))
FIELDS = ["name", "uuid", "stack_name", "service_name", "primary_ip", "ips", "state", "health_state", "labels"]
MUTATIONS = st.lists(st.sampled_from(FIELDS + ["labels." + LABEL, "labels." + PROXY_LABEL] * 3), min_size=1, max_size=2)
MUTATED_VALUE = st.one_of(nasty_text, anything, st.just(None), st.just(MISSING))


def near(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid value with hostile text before, after or inside it: what slips past a loose check."""
    return st.one_of(
        st.builds(lambda v, junk: v + junk, valid, nasty_text),
        st.builds(lambda junk, v: junk + v, nasty_text, valid),
        st.builds(lambda v, junk, cut: v[:cut] + junk + v[cut:], valid, nasty_text, st.integers(0, 40)),
    )


# For the fields that reach a template, attacks aimed at their own validation.
ATTACKS = {
    "primary_ip": st.one_of(near(IPS), st.builds(lambda ip, scope: f"{ip}%{scope}", st.ip_addresses(v=6).map(str), nasty_text)),
    "stack_name": near(dns_label),
    "service_name": near(dns_label),
    "uuid": near(st.uuids().map(str)),
    "labels." + LABEL: st.one_of(near(PORTS.map(str)), st.sampled_from(["८०", "٣", "1e3", "0x50", "+80", "80.0", "00080"])),
    "labels." + PROXY_LABEL: near(st.sampled_from(PROXY_KEYWORDS)),
}
ATTACKS["ips"] = st.lists(ATTACKS["primary_ip"], min_size=1, max_size=2)
MUTATED = {key: ATTACKS.get(key, MUTATED_VALUE) | MUTATED_VALUE for key in FIELDS + ["labels." + LABEL, "labels." + PROXY_LABEL]}
WILD_FIELDS = st.sets(st.sampled_from(FIELDS[:-1]))
WILD_VALUE = st.one_of(anything, st.just(None))
WILD_LABELS = st.dictionaries(st.sampled_from([LABEL, PROXY_LABEL]) | nasty_text, anything, max_size=3)
LABELS_SHAPE = st.sampled_from(["dict", None, "labels", ["x"]])
NAME = nasty_text | dns_label
IP_OR_TEXT = IPS | nasty_text
ALIAS_NAMES = st.one_of(anything, st.lists(anything, max_size=3))
OTHER_METADATA = st.dictionaries(nasty_text.filter(lambda k: k != "aliases"), anything, max_size=2)


@st.composite
def valid_stacks(draw) -> tuple[list[dict], dict[str, list[str]], Environment]:
    env = Environment([], None)
    aliases: dict[str, list[str]] = {}
    for i in range(draw(st.integers(0, 2))):
        stack = draw(ascii_case)(draw(st.sampled_from([f"valid-{i}", f"valid_{i}"])))  # Compose projects hold `_`
        backend = stack.lower().replace("_", "-")
        env.routes.add((f"{backend}.{DOMAIN}", backend))
        lines = env.servers.setdefault(backend, set())
        for j in range(draw(st.integers(1, 2))):
            uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{i}/{j}"))  # hostile uuids come from the hostile items
            service, ip, port, proxy = draw(dns_label), draw(IPS), draw(PORTS), draw(PROXY_VALUES)
            labels = {k: v for k, v in draw(EXTRA_LABELS).items() if k not in (LABEL, PROXY_LABEL)}
            if proxy:
                labels[PROXY_LABEL] = proxy
            item = container(stack, service, ip, port, health=draw(HEALTHY), labels=labels, name=draw(nasty_text), uuid=uuid)
            if draw(st.booleans()):  # a YAML answers file gives `map-public-http: 8080` as a number
                item["labels"][LABEL] = port
            env.containers.append(item)
            address = ipaddress.ip_address(ip)
            shown = f"[{address}]" if address.version == 6 else str(address)
            lines.add(f"server {service}-{uuid} {shown}:{port}" + CHECK + (f" {proxy}" if proxy else ""))
        aliases[stack] = [f"valid-alias-{i}", f"Valid-Alias-{i}.Example.COM."]
        env.routes |= {(f"valid-alias-{i}.{DOMAIN}", backend), (f"valid-alias-{i}.example.com", backend)}
    return env.containers, aliases, env


@st.composite
def hostile_container(draw, valid: list[dict]) -> Any:
    kind = draw(HOSTILE_KIND)
    if kind == "not an object":
        return draw(NOT_AN_OBJECT)
    if kind == "mutated valid" and valid:  # one to three fields of a valid container made hostile
        item = dict(valid[draw(st.integers(0, len(valid) - 1))])
        item["labels"] = dict(item["labels"])
        item["uuid"] = "m" + item["uuid"]  # its own server name: it may stay valid and be routed beside the original
        for key in draw(MUTATIONS):
            value = draw(MUTATED[key])
            if key.startswith("labels."):
                if isinstance(item.get("labels"), dict):
                    item["labels"].pop(key[7:], None)
                    if value is not MISSING:
                        item["labels"][key[7:]] = value if isinstance(value, str) else str(value)
            elif value is MISSING:
                item.pop(key, None)
            else:
                item[key] = not_valid_namespace(value) if key == "stack_name" else value
        return item
    item = {key: draw(WILD_VALUE) for key in draw(WILD_FIELDS)}
    shape = draw(LABELS_SHAPE)
    item["labels"] = draw(WILD_LABELS) if shape == "dict" else shape
    if draw(st.booleans()):  # often a plausible container, so the validation of each field is reached
        item.update(
            uuid=draw(NAME), stack_name=draw(NAME), service_name=draw(NAME), state="running",
            primary_ip=draw(IP_OR_TEXT), health_state=None,
        )
    item["stack_name"] = not_valid_namespace(item.get("stack_name"))
    return item


@st.composite
def environments(draw) -> Environment:
    valid, valid_aliases, env = draw(valid_stacks())
    hostile = draw(st.lists(hostile_container(valid), max_size=4))
    env.containers = draw(st.permutations(valid + hostile))
    aliases: Any = dict(valid_aliases)
    valid_keys = sorted(valid_aliases)
    for _ in range(draw(st.integers(0, 3))):
        stack = valid_keys[draw(st.integers(0, len(valid_keys) - 1))] if valid_keys and draw(st.booleans()) else draw(NAME)
        names = draw(ALIAS_NAMES)
        names = [not_valid_namespace(n) for n in names] if isinstance(names, list) else not_valid_namespace(names)
        if stack in valid_aliases:  # hostile names beside a valid stack's valid ones
            aliases[stack] = list(valid_aliases[stack]) + (names if isinstance(names, list) else [names])
        else:
            aliases[not_valid_namespace(stack)] = names
    env.metadata = {**draw(OTHER_METADATA), "aliases": aliases}
    if draw(st.integers(0, 9)) == 0:  # now and then the whole aliases value is of the wrong shape
        env.metadata = {"aliases": draw(anything)}
        env.routes = {r for r in env.routes if not r[0].startswith("valid-alias")}
    return env


# --- parsing what was rendered -------------------------------------------------------------------

SETTINGS = load_settings(None, {
    "STACK_DOMAIN": DOMAIN, "RANCHER_PROXY_LABEL": PROXY_LABEL, "HTTP_PORT": "18080", "BIND_ADDRESS": "127.0.0.1",
    "HAPROXY_CONFIG": "/nonexistent/rhgen/haproxy.cfg", "HAPROXY_BACKEND_CONFIG": "/nonexistent/rhgen/backends.cfg",
    "HAPROXY_DOMAIN_MAP": "/nonexistent/rhgen/domain.map",
}, {})
MAP_HEADER = ["# Generated by rhgen from domain.map.j2 -- edit the template, not this file.", "# host backend"]
IDENTIFIER = r"[A-Za-z0-9_.:-]+"
ADDRESS = r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\])"
SERVER_LINE = re.compile(rf"    server ({IDENTIFIER}) ({ADDRESS}):(\d{{1,5}})(?: check inter \d+ fall \d+ rise \d+)?(?: ({'|'.join(PROXY_KEYWORDS)}))?\Z")
CHECK = " check inter 1000 fall 2 rise 2"  # the bundled defaults' health check
HTTP_CHECK_LINE = re.compile(r"    http-check send meth GET uri /[A-Za-z0-9._~/%?=&+:@,!$*-]* ver HTTP/1.1 hdr Host [a-z0-9.-]+\Z")
BACKEND_LINE = re.compile(r"backend ([a-z0-9-]{1,63})\Z")
STACK_COMMENT = re.compile(r"# stack ([A-Za-z0-9_-]{1,63})\Z")  # `_` of Compose project names
COUNT_COMMENT = re.compile(r"# (\d+) backends, (\d+) servers\Z")


def parse_map(text: str) -> list[tuple[str, str]]:
    lines = text.split("\n")
    assert lines[:2] == MAP_HEADER and lines[-1] == "", lines[:2]
    entries = []
    for line in lines[2:-1]:
        host, backend = line.split(" ")  # exactly two words: nothing added to a line
        assert is_hostname(host.removeprefix("*.")) and re.fullmatch(r"[a-z0-9-]{1,63}", backend), line  # *. : a wildcard alias
        entries.append((host, backend))
    return entries


def parse_backends(text: str) -> dict[str, list[str]]:
    """backend -> its server lines; any line the template could not have written fails."""
    lines = text.split("\n")
    assert lines[0] == "# Generated by rhgen from backends.cfg.j2 -- edit the template, not this file."
    assert COUNT_COMMENT.match(lines[1]) and lines[-1] == ""
    backends: dict[str, list[str]] = {}
    current = None
    for number, line in enumerate(lines[2:-1], 3):
        if line == "" or STACK_COMMENT.match(line):
            continue
        if match := BACKEND_LINE.match(line):
            current = match.group(1)
            assert current not in backends, f"line {number}: backend {current} twice"
            backends[current] = []
        elif line == "    balance roundrobin":
            assert current is not None and backends[current] == []
        elif line == "    option httpchk" or HTTP_CHECK_LINE.match(line):
            assert current is not None and backends[current] == []
        elif match := SERVER_LINE.match(line):
            assert current is not None and 1 <= int(match.group(3)) <= 65535, line
            ipaddress.ip_address(match.group(2).strip("[]"))
            backends[current].append(line.strip())
        else:
            raise AssertionError(f"line {number} is not one the template writes: {line!r}")
    return backends


@dataclass
class Result:
    source: SourceData
    routing: Routing
    files: dict[str, str]


def run_pipeline(env: Environment, settings: Any = SETTINGS) -> Result | None:
    """source_data -> build_routing -> render_all; None when rhgen refused the answer with its own error."""
    try:
        source = source_data(env.containers, env.metadata, "metadata test")
    except RhgenError:
        assert not env.servers, "an answer holding valid containers was refused"
        return None
    assert len(source.containers) + len(source.skipped) == len(env.containers)  # none vanishes unexplained
    routing = build_routing(source, settings.stack_domain, settings.rancher_label, settings.rancher_proxy_label)
    files = {f.role: f.content.decode("utf-8") for f in render.render_all(settings, routing)}
    return Result(source, routing, files)


EMPTY_CONFIG = render.render_all(SETTINGS, Routing((), ()))[-1].content.decode()


def check_rendered(env: Environment, result: Result) -> None:
    routing, files = result.routing, result.files
    # haproxy.cfg holds nothing from metadata at all
    assert files["config"] == EMPTY_CONFIG
    # the map: exactly the routes, each `host backend`
    entries = parse_map(files["map"])
    assert entries == [(r.host, r.backend) for r in routing.routes]
    assert len({host for host, _ in entries}) == len(entries)
    # backends.cfg: only the template's lines, exactly the model's backends and servers
    backends = parse_backends(files["backends"])
    assert list(backends) == [b.name for b in routing.backends]
    for backend in routing.backends:
        assert backends[backend.name] == [
            f"server {s.name} {s.address}:{s.port}" + CHECK + (f" {s.proxy_protocol}" if s.proxy_protocol else "")
            for s in backend.servers
        ]
    assert {backend for _, backend in entries} <= set(backends)
    # the valid items are still routed, exactly
    assert env.routes <= set(entries), env.routes - set(entries)
    for backend, lines in env.servers.items():
        assert lines <= set(backends[backend]), lines - set(backends[backend])
    # every labelled container is routed or skipped, with a one-line reason naming it
    labelled = [c for c in result.source.containers if LABEL in c.labels]
    skipped_now = routing.skipped[len(result.source.skipped):]
    assert routing.server_count + len([s for s in skipped_now if s.what.startswith("container ")]) == len(labelled)
    for skipped in routing.skipped:
        line = f"{skipped.what}: {skipped.reason}"
        assert skipped.what and skipped.reason and line.isprintable(), repr(line)
        assert len(line) <= MAX_LINE, f"{len(line)} characters: {line[:200]!r}"  # values are cut, however long


MAX_LINE = 1000  # a skip names a few values of at most SHOWN_CHARS (80) characters each


# --- properties ----------------------------------------------------------------------------------


def test_hostile_environments_render_only_what_the_templates_write(reliability):
    examples = 0

    @given(environments())
    def check(env: Environment) -> None:
        nonlocal examples
        examples += 1
        result = run_pipeline(env)
        if result is not None:
            check_rendered(env, result)

    check()
    reliability(HOSTILE, "stack, service, container names, labels (text or number), proxy labels, uuids, IPs, aliases, shapes",
                cases=examples, held="no exception but rhgen's own; map and backends hold exactly the model's lines; "
                "haproxy.cfg untouched by metadata; every valid item still routed; every skip one printable line "
                f"of at most {MAX_LINE} characters")


def impostors_of(valid: list[dict], aliases: dict[str, list[str]], draw) -> tuple[list[dict], dict[str, list[str]]]:
    """Containers anyone who can start one could add: a stack named like a served one in another case
    or with `_` for `-`, a copied uuid, and aliases claiming the served stacks' hosts."""
    items, claims = [], {}
    for n, item in enumerate(valid):
        stack = item["stack_name"]
        twin = draw(st.sampled_from([stack.swapcase(), stack.replace("-", "_"), stack.replace("_", "-"), stack.upper()]))
        ip = f"127.250.{n // 250}.{n % 250 + 1}"
        if twin != stack:
            items.append({**item, "stack_name": twin, "name": f"impostor-stack-{n}", "primary_ip": ip, "uuid": f"i{n}"})
            claims[twin] = [f"{twin}.{DOMAIN}", *aliases.get(stack, [])]
        items.append({**item, "name": f"impostor-uuid-{n}", "primary_ip": ip})  # same stack, service and uuid
    return items, claims


def test_impostors_never_take_over_what_is_served(reliability):
    """Issue 17: whoever can start a labelled container must not take a host or a server another serves."""
    examples = 0

    @given(environments(), st.data())
    def check(env: Environment, data: st.DataObject) -> None:
        nonlocal examples
        served = run_pipeline(env)
        assume(served is not None and env.servers)
        examples += 1
        lines = " ".join(line for backend_lines in env.servers.values() for line in backend_lines) + " "
        valid = [c for c in env.containers if isinstance(c, dict) and f"-{c.get('uuid')} " in lines]
        aliases = env.metadata.get("aliases") if isinstance(env.metadata.get("aliases"), dict) else {}
        impostors, claims = impostors_of(valid, {k: v for k, v in aliases.items() if isinstance(v, list)}, data.draw)
        incumbents = incumbents_from(served.files["map"].encode(), served.files["backends"].encode())
        source = source_data(data.draw(st.permutations(env.containers + impostors)), {**env.metadata, "aliases": {**aliases, **claims}}, "test")
        routing = build_routing(source, SETTINGS.stack_domain, SETTINGS.rancher_label, SETTINGS.rancher_proxy_label, incumbents)
        after = {f.role: f.content.decode() for f in render.render_all(SETTINGS, routing)}
        entries = set(parse_map(after["map"]))
        assert env.routes <= entries, env.routes - entries
        before, now = parse_backends(served.files["backends"]), parse_backends(after["backends"])
        for backend in env.servers:
            assert now[backend] == before[backend]
        assert "127.250." not in after["backends"]

    check()
    reliability(HOSTILE, "impostors: stacks named like served ones (case, `_`), copied uuids, aliases on served hosts",
                cases=examples, held="every served host and server line stays with its incumbent; no impostor address rendered")


def test_answers_file_numbers_are_ports_and_other_kinds_are_named(run_rhgen, tmp_path, reliability):
    """Issue 17: in a YAML answers file an unquoted port (`map-public-http: 8080`) was silently ignored."""
    (tmp_path / "answers.yml").write_text(
        "containers:\n"
        + "".join(
            f"  - {{name: {name}, uuid: u{n}, stack_name: {name}, service_name: web, primary_ip: 127.0.0.{n + 11},"
            f" state: running, labels: {{{LABEL}: {value}, other: [1, 2]}}}}\n"
            for n, (name, value) in enumerate([("app1", "8080"), ("app2", "'8080'"), ("app3", "true"), ("app4", "80.5")])
        )
        + "self_service_metadata: {}\n"
    )
    result = run_rhgen(["routes", "--json", "-v"], {"STACK_DOMAIN": DOMAIN, "RHGEN_SOURCE": "file", "METADATA_FILE": "answers.yml"})
    assert result.returncode == 0, result.stderr
    routes = json.loads(result.stdout)["routes"]
    assert [(r["host"], r["servers"][0]["port"]) for r in routes] == [(f"app1.{DOMAIN}", 8080), (f"app2.{DOMAIN}", 8080)]
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert f"rhgen: warning: label '{LABEL}' of container 'app3': is a boolean, not text; skipped" in warnings
    assert f"rhgen: warning: label '{LABEL}' of container 'app4': is a number, not text; skipped" in warnings
    assert "rhgen: warning: label 'other' of container 'app1': is a list, not text; skipped" in warnings
    reliability(HOSTILE, "YAML answers file: numbers, booleans, floats and lists as label values", cases=4,
                held="a number is a port; any other kind is a warning naming the label and the container")


def test_a_100_kb_value_is_cut_in_every_message(metadata_server, generate, reliability):
    """Issue 17: a 100 KB stack, alias or label value was printed whole, twice, in each warning line."""
    huge = "x" * 100_000
    metadata_server.set([
        container(huge, "web", "127.0.0.11", 8080, name=huge),
        container("app1", "web", "127.0.0.12", huge, name="big-label"),
        container("app2", "web", "127.0.0.13", 8080),
    ])
    metadata_server.set(metadata={"aliases": {"app2": [huge + ".com"]}})
    result = generate()
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(len(line) < 400 for line in lines), [len(line) for line in lines]
    assert all("… (100000 characters)" in line or "… (100004 characters)" in line for line in lines), lines
    reliability(HOSTILE, "100 KB stack, container, alias and label values", cases=3,
                held="each warning line under 400 characters: values cut to 80 with their total length")


ESCAPE = "\x1b[2J\x1b[31mred\x1b]0;title\x07\u202e"


def test_terminal_escapes_in_names_are_printed_escaped(metadata_server, run_rhgen, target, reliability):
    """Issue 17: `rhgen routes` printed container names raw: a name could clear the screen or colour it."""
    metadata_server.set([
        container("app1", "web", "127.0.0.11", 8080, name=f"app1-{ESCAPE}"),
        container("app2", "web", "127.0.0.12", "80a", name=f"bad-{ESCAPE}"),
    ])
    outputs = []
    for args in (["routes"], ["routes", "--json"], ["generate"]):
        result = run_rhgen(args, target.env)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    metadata_server.set([{"name": ESCAPE}])  # nothing usable: an error quoting the name
    result = run_rhgen(["generate"], target.env)
    assert result.returncode == 1
    outputs.append(result.stdout + result.stderr)
    for printed in outputs:
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", printed), repr(printed)
    assert "[app1-\\x1b[2J\\x1b[31mred" in outputs[0]
    reliability(HOSTILE, "terminal escape sequences and bidi overrides in container names", cases=len(outputs),
                held="routes (text and JSON), warnings and errors print them escaped, never raw")


STACK_NAMES = st.one_of(nasty_text, dns_label.flatmap(lambda s: st.sampled_from([s, s.upper(), s.title(), s + "\u212a", "\u212a" + s])))
ALIASES = st.one_of(nasty_text, dns_label.flatmap(lambda s: st.sampled_from([s, s.upper(), s + ".Example.com.", s + "\u212a", "\u017f" + s])))


def test_a_stack_or_alias_gets_only_its_own_name_as_host(reliability):
    """DNS and haproxy's `lower` fold ASCII case only: no Unicode case trick reaches another name."""
    examples = 0

    @given(STACK_NAMES, ALIASES)
    def check(stack: str, alias: str) -> None:
        nonlocal examples
        examples += 1
        items = [container(stack, "web", "127.0.0.11", 8080), container("zz-other", "web", "127.0.0.12", 8080)]
        routing = build_routing(source_data(items, {"aliases": {"zz-other": [alias]}}, "test"), DOMAIN, LABEL)
        for route in routing.routes:
            if route.kind == "stack" and route.backend != "zz-other":
                label = stack.lower().replace("_", "-")
                assert stack.isascii() and route.host == f"{label}.{DOMAIN}" and route.backend == label
            elif route.kind == "alias":
                name = alias.strip()
                assert name.isascii() and route.backend == "zz-other"
                expected = name.lower()[:-1] if name.endswith(".") else name.lower()
                assert route.host in (expected, f"{expected}.{DOMAIN}")

    check()
    reliability(HOSTILE, "Unicode and case tricks in stack names and aliases", cases=examples,
                held="a host is only ever the ASCII-lower-cased name itself; the Kelvin sign is no k")


def test_hostile_environments_pass_the_real_haproxy_check(reliability):
    """A smaller sample through the real `haproxy -c` (about 30 ms each): three environments at
    once, their stacks renamed apart, in one set of files."""
    examples = 0

    @hypothesis_settings(max_examples=60)
    @given(st.lists(environments(), min_size=3, max_size=3))
    def check(envs: list[Environment]) -> None:
        nonlocal examples
        examples += 1
        with tempfile.TemporaryDirectory(prefix="rhgen-hostile-") as folder:
            paths = {name: str(Path(folder, name)) for name in ("haproxy.cfg", "backends.cfg", "domain.map")}
            settings = load_settings(None, {
                "STACK_DOMAIN": DOMAIN, "RANCHER_PROXY_LABEL": PROXY_LABEL, "HTTP_PORT": "18080",
                "HAPROXY_CONFIG": paths["haproxy.cfg"], "HAPROXY_BACKEND_CONFIG": paths["backends.cfg"],
                "HAPROXY_DOMAIN_MAP": paths["domain.map"],
            }, {})
            containers: list[Any] = []
            aliases: dict[str, Any] = {}
            for n, env in enumerate(envs):
                for item in env.containers:
                    if isinstance(item, dict) and isinstance(item.get("stack_name"), str):
                        item = {**item, "stack_name": f"e{n}{item['stack_name']}"}
                    containers.append(item)
                if isinstance(env.metadata, dict) and isinstance(env.metadata.get("aliases"), dict):
                    aliases.update({f"e{n}{k}": v for k, v in env.metadata["aliases"].items()})
            result = run_pipeline(Environment(containers, {"aliases": aliases}), settings)
            assume(result is not None)
            for name, role in (("haproxy.cfg", "config"), ("backends.cfg", "backends"), ("domain.map", "map")):
                Path(paths[name]).write_text(result.files[role])
            checked = subprocess.run(
                ["haproxy", "-c", "-f", paths["haproxy.cfg"], "-f", paths["backends.cfg"]],
                capture_output=True, text=True, timeout=60,
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            parse_backends(result.files["backends"])

    check()
    reliability(HOSTILE, "hostile environments through the real haproxy -c", cases=examples,
                held="haproxy -c accepted every rendered set (three environments per set)")


# --- a real haproxy and crafted Host headers -------------------------------------------------------


HOSTS = {  # request head -> the one stack allowed to answer (None: no stack at all)
    b"GET / HTTP/1.1\r\nHost: app1.dev.tld\r\n": "app1",
    b"GET / HTTP/1.1\r\nHost: APP1.Dev.TLD:8080\r\n": "app1",
    b"GET / HTTP/1.1\r\nHost: app3.dev.tld\r\n": "App3",
    b"GET / HTTP/1.1\r\nHost: http.dev.tld\r\n": "http",
    b"GET / HTTP/1.1\r\nHost: www.dev.tld\r\n": "app1",
    b"GET / HTTP/1.1\r\nHost: SHOP.example.com\r\n": "app2",
    b"GET / HTTP/1.1\r\nHost: app1.dev.tld.evil.net\r\n": None,
    b"GET / HTTP/1.1\r\nHost: evil.app1.dev.tld\r\n": None,
    b"GET / HTTP/1.1\r\nHost: xapp1.dev.tld\r\n": None,
    b"GET / HTTP/1.1\r\nHost: app1.dev.tldx\r\n": None,
    b"GET / HTTP/1.1\r\nHost: app1\r\n": None,
    b"GET / HTTP/1.1\r\nHost: dev.tld\r\n": None,
    b"GET / HTTP/1.1\r\nHost: app1.dev.tld.\r\n": None,
    b"GET / HTTP/1.1\r\nHost: shop.example.com.dev.tld\r\n": None,
    b"GET / HTTP/1.1\r\nHost: app2.dev.tld@app1.dev.tld\r\n": None,
    b"GET / HTTP/1.1\r\nHost: app1.dev.tld, app2.dev.tld\r\n": None,  # req.hdr() would take the last one
    b"GET / HTTP/1.1\r\nHost: app1.dev.tld\r\nHost: app2.dev.tld\r\n": None,
    b"GET http://app2.dev.tld/ HTTP/1.1\r\nHost: app1.dev.tld\r\n": None,
    b"GET / HTTP/1.1\r\nHost: kube.dev.tld\r\n": None,  # the Kelvin-sign stack below is not kube
    "GET / HTTP/1.1\r\nHost: \u212aube.dev.tld\r\n".encode(): None,
    b"GET / HTTP/1.1\r\nHost: %61pp1.dev.tld\r\n": None,
    b"GET / HTTP/1.1\r\nHost: app1%2edev.tld\r\n": None,
    b"GET / HTTP/1.0\r\n": None,
}


def test_crafted_host_headers_reach_their_own_stack_or_none(
    metadata_server, backend_servers, generate, haproxy, reliability
):
    stacks = {"app1": "127.0.0.11", "app2": "127.0.0.12", "App3": "127.0.0.13", "http": "127.0.0.14", "\u212aube": "127.0.0.15"}
    for stack, ip in stacks.items():
        backend_servers.start(ip, stack)
    ports = backend_servers.ports()
    metadata_server.set([container(stack, "web", ip, ports[ip], name=f"c-{ip}") for stack, ip in stacks.items()])
    metadata_server.set(metadata={"aliases": {"app1": ["www"], "app2": ["shop.example.com"]}})
    result = generate()
    assert result.returncode == 0, result.stderr
    assert "stack '\u212aube' is not a valid DNS label" in result.stderr
    proxy = haproxy.start()

    for head, stack in HOSTS.items():
        status, body = raw_request(proxy.port, head)
        if stack is None:
            assert status in (400, 503) and body not in stacks, (head, status, body)
        else:
            assert (status, body) == (200, stack), head
    assert backend_servers["127.0.0.15"].hits == 0
    reliability(HOSTILE, "crafted Host headers through a real haproxy", cases=len(HOSTS),
                held="each reaches its own stack or none (suffix, prefix, case, comma list, two Host headers, absolute URI, Unicode)")


# --- symbolic links planted in the output folder ----------------------------------------------------

APP = [container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")]
NEW = APP + [container("app2", "web", "127.0.0.12", 8080, name="app2-web-1")]


@pytest.mark.parametrize("name, victim_exists", [(".rhgen.reload-pending", True), (".rhgen.lock", False)])
def test_a_symlink_planted_at_a_name_rhgen_writes_is_refused_not_followed(
    name, victim_exists, metadata_server, generate, target, tmp_path, reliability
):
    # As root, following it would truncate (or create) any file on the machine.
    metadata_server.set(APP)
    assert generate().returncode == 0
    victim = tmp_path / "victim"
    if victim_exists:
        victim.write_text("root:x:0:0::/root:/bin/sh\n")
    (target.folder / name).unlink(missing_ok=True)
    (target.folder / name).symlink_to(victim)
    before = {path: path.read_bytes() for path in target.outputs}
    metadata_server.set(NEW)

    result = generate(RELOAD_COMMAND="true")

    assert result.returncode == 1
    assert result.stderr == (
        f"rhgen: error: {target.folder / name}: is a symbolic link; rhgen does not follow links for its own files\n"
    )
    assert {path: path.read_bytes() for path in target.outputs} == before
    if victim_exists:
        assert victim.read_text() == "root:x:0:0::/root:/bin/sh\n"
    else:
        assert not victim.exists()
    reliability(HOSTILE, f"symbolic link planted at {name}", held="refused with one line, exit 1, link target untouched, nothing changed")


def test_dry_run_shows_a_symlinked_target_as_a_link_never_the_file_it_points_at(
    metadata_server, generate, target, tmp_path, reliability
):
    metadata_server.set(APP)
    assert generate().returncode == 0
    secret = tmp_path / "secret"
    secret.write_text("db_password=hunter2\n")
    target.map.unlink()
    target.map.symlink_to(secret)

    result = generate("--dry-run")

    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert f"@@ {target.map} is a symbolic link to {secret}; rhgen would replace the link with a file @@" in result.stdout
    # A real run does what the README says: the link becomes a file, the file it pointed at stays.
    assert generate().returncode == 0
    assert not target.map.is_symlink() and "app1.dev.tld app1" in target.map.read_text()
    assert secret.read_text() == "db_password=hunter2\n"
    reliability(HOSTILE, "dry run with an output path symlinked to a secret file",
                held="the diff names the link and its target, never the target's contents")
