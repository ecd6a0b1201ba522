"""Model stage: raw metadata (untrusted JSON) -> validated, sorted, frozen routing model.

This is the border: every value that later reaches a template is checked here. A bad
container, label, alias or stack is skipped with a reason naming it and never blocks the
others. The result is deterministic: the same content in any order gives the same model.
"""

from __future__ import annotations

import ipaddress
import re
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .messages import shown
from .names import dns_lower, identifier, is_dns_label, is_hostname, normalise_hostname

log = logging.getLogger(__name__)

# Rancher's own balancer sends traffic only to these health states (None/empty included).
ROUTABLE_HEALTH = {None, "", "healthy", "updating-healthy"}
HEALTHCHECK_LABEL = "rhgen.healthcheck"  # value: the path of an HTTP health check, e.g. /healthz
# A path haproxy takes as one word: no spaces, quotes, '#' or backslashes.
_HEALTH_PATH = re.compile(r"/[A-Za-z0-9._~/%?=&+:@,!$*-]{0,200}")
PROXY_KEYWORDS = ("send-proxy", "send-proxy-v2", "send-proxy-v2-ssl", "send-proxy-v2-ssl-cn")


@dataclass(frozen=True)
class Container:
    """The fields of one source container that routing needs, already type-checked."""

    name: str
    uuid: str
    stack: str
    service: str
    ip: str | None
    state: str
    health: str | None
    labels: Mapping[str, str]
    bad_labels: tuple[tuple[str, str], ...] = ()  # (label, kind) of values that are no text, left out


@dataclass(frozen=True)
class SourceData:
    """What every source returns: containers plus the proxy service's own metadata."""

    containers: tuple[Container, ...]
    service_metadata: Mapping[str, Any]
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True)
class Server:
    name: str
    address: str  # host part as written in haproxy.cfg ("10.0.0.1" or "[fd00::1]")
    port: int
    proxy_protocol: str  # "" or one of PROXY_KEYWORDS
    container: str
    health_path: str = ""  # HTTP check path from the rhgen.healthcheck label; "" checks TCP only


@dataclass(frozen=True)
class Backend:
    name: str
    stack: str
    servers: tuple[Server, ...]

    @property
    def health_path(self) -> str:
        """The HTTP check path when every server names the same one (a check is per backend in
        haproxy); otherwise "" and the servers get a plain TCP check."""
        paths = {server.health_path for server in self.servers}
        return paths.pop() if len(paths) == 1 else ""


@dataclass(frozen=True)
class Route:
    host: str
    backend: str
    kind: str  # "stack" or "alias"


@dataclass(frozen=True)
class Skipped:
    """Something from the source that gets no traffic, and why."""

    what: str
    reason: str
    warn: bool = True  # False for the ordinary (stopped, unhealthy) cases


@dataclass(frozen=True)
class Routing:
    backends: tuple[Backend, ...]
    routes: tuple[Route, ...]
    skipped: tuple[Skipped, ...] = field(default=())

    @property
    def server_count(self) -> int:
        return sum(len(b.servers) for b in self.backends)


# --- reading one container out of untrusted JSON ---------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def container_from_json(item: Any, index: int) -> Container | Skipped:
    """Type-check one element of /containers; a malformed one becomes a Skipped naming it."""
    if not isinstance(item, dict):
        return Skipped(f"containers[{index}]", f"is a {type(item).__name__}, not an object")
    name = _text(item.get("name")) or f"containers[{index}]"
    what = f"container {shown(name)}"
    labels = item.get("labels") or {}
    if not isinstance(labels, dict):
        return Skipped(what, "labels is not an object")
    labels, bad_labels = _label_values(labels)
    for key in ("stack_name", "service_name", "uuid", "state"):
        if not _text(item.get(key)):
            return Skipped(what, f"has no {key}")
    health = item.get("health_state")
    if health is not None and not isinstance(health, str):
        return Skipped(what, "health_state is not a string")
    ip = _text(item.get("primary_ip"))
    if not ip:
        ips = item.get("ips")
        ip = _text(ips[0]) if isinstance(ips, list) and ips else None
    return Container(
        name=name,
        uuid=item["uuid"],
        stack=item["stack_name"],
        service=item["service_name"],
        ip=ip,
        state=item["state"],
        health=health,
        labels=labels,
        bad_labels=bad_labels,
    )


def _label_values(labels: dict[Any, Any]) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """Label values as text. Docker and Rancher send strings; a YAML answers file sends
    `map-public-http: 8080` as a number, which is a port too. Any other kind (true, 1.5, a list)
    is kept out and named, so the container's warning says which label was ignored."""
    values, bad = {}, []
    for key, value in labels.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, str):
            values[key] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            values[key] = str(value)
        else:
            bad.append((key, _json_kind(value)))
    return values, tuple(sorted(bad))


def _json_kind(value: Any) -> str:
    kinds = {dict: "mapping", list: "list", bool: "boolean", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def containers_from_json(items: Iterable[Any]) -> tuple[tuple[Container, ...], tuple[Skipped, ...]]:
    containers, skipped = [], []
    for index, item in enumerate(items):
        result = container_from_json(item, index)
        (skipped if isinstance(result, Skipped) else containers).append(result)
    return tuple(containers), tuple(skipped)


# --- building the routing model ----------------------------------------------------------------


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")


def _server_address(ip: str | None) -> str | None:
    if ip and _CANONICAL_IPV4.match(ip):  # the common case, without ipaddress' cost (10k containers)
        return ip
    try:
        parsed = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return None
    if getattr(parsed, "scope_id", None):
        # ipaddress accepts anything after '%' as an IPv6 scope id (spaces, '#', newlines):
        # never a container address, and it would reach haproxy.cfg unchecked.
        return None
    return f"[{parsed}]" if parsed.version == 6 else str(parsed)


def _port(value: str) -> int | None:
    # The label value must be the port exactly: " 80\n" is as wrong as "80a".
    if not (value.isascii() and value.isdigit() and len(value) <= 5):
        return None
    port = int(value)
    return port if 1 <= port <= 65535 else None


def server_for(container: Container, label: str, proxy_label: str) -> Server | Skipped:
    """The server line of one labelled container, or why it gets no traffic."""
    what = f"container {shown(container.name)}"
    if container.state != "running":
        return Skipped(what, f"state is {shown(container.state)}", warn=False)
    if container.health not in ROUTABLE_HEALTH:
        return Skipped(what, f"health_state is {shown(container.health)}", warn=False)
    port = _port(container.labels[label])
    if port is None:
        return Skipped(what, f"label {label}={shown(container.labels[label])} is not a port (1-65535)")
    address = _server_address(container.ip)
    if address is None:
        return Skipped(what, f"primary_ip {shown(container.ip)} is not an IP address")
    proxy = ""
    if proxy_label and proxy_label in container.labels:
        proxy = container.labels[proxy_label].strip()
        if proxy not in PROXY_KEYWORDS:
            return Skipped(
                what, f"label {proxy_label}={shown(container.labels[proxy_label])} is not one of {', '.join(PROXY_KEYWORDS)}"
            )
    health_path = container.labels.get(HEALTHCHECK_LABEL, "")
    if health_path and not _HEALTH_PATH.fullmatch(health_path):
        return Skipped(what, f"label {HEALTHCHECK_LABEL}={health_path!r} is not a URL path (/healthz)")
    return Server(
        name=identifier(f"{container.service}-{container.uuid}"),
        address=address,
        port=port,
        proxy_protocol=proxy,
        container=container.name,
        health_path=health_path,
    )


def _aliases(service_metadata: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[Skipped]]:
    """(stack, alias) pairs from `aliases: {stack: [name, ...]}`; a lone string counts as a list of one."""
    raw = service_metadata.get("aliases") if isinstance(service_metadata, Mapping) else None
    if raw is None:
        return [], []
    if not isinstance(raw, dict):
        return [], [Skipped("metadata aliases", "is not a mapping of stack: [names]")]
    pairs, skipped = [], []
    for stack, names in raw.items():
        if isinstance(names, str):
            names = [names]
        if not isinstance(stack, str) or not isinstance(names, list):
            skipped.append(Skipped(f"aliases of {shown(stack)}", "is not a list of names"))
            continue
        for name in names:
            if not isinstance(name, str):
                skipped.append(Skipped(f"alias {shown(name)} of stack {shown(stack)}", "is not a string"))
                continue
            pairs.append((stack, name))
    return pairs, skipped


def alias_host(name: str, domain: str) -> str:
    """A name with a dot is a full host name; any other becomes <name>.<domain>."""
    host = normalise_hostname(name)
    return host if "." in host else f"{host}.{domain}"


def host_label(stack: str) -> str:
    """The host label of a stack: ASCII lower case, `_` as `-` (Compose project names such as
    rt_proj hold `_`, which a host name cannot). Callers check it is a DNS label."""
    return dns_lower(stack).replace("_", "-")


@dataclass(frozen=True)
class Incumbents:
    """What the live files serve now, read once at the edge: who keeps a contested name.

    A newcomer (a stack named APP1 beside app1, a second container with the same uuid) must
    not take over what is served; when nobody serves a contested name yet, nobody gets it.
    """

    hosts: Mapping[str, str] = field(default_factory=dict)  # host -> backend, from domain.map
    stacks: Mapping[str, str] = field(default_factory=dict)  # backend -> stack, from backends.cfg's "# stack" lines
    servers: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (backend, server) -> "address:port"


def incumbents_from(domain_map: bytes | None, backends: bytes | None) -> Incumbents:
    """Parse the live domain.map and backends.cfg (as the bundled templates write them); lines of
    any other shape are ignored, so a customised template only means fewer incumbents."""
    hosts: dict[str, str] = {}
    for line in (domain_map or b"").decode("utf-8", "replace").splitlines():
        words = line.split()
        if len(words) == 2 and not words[0].startswith("#"):
            hosts.setdefault(words[0], words[1])
    stacks: dict[str, str] = {}
    servers: dict[tuple[str, str], str] = {}
    stack, backend = None, None
    for line in (backends or b"").decode("utf-8", "replace").splitlines():
        words = line.split()
        if len(words) == 3 and words[:2] == ["#", "stack"]:
            stack = words[2]
        elif len(words) == 2 and words[0] == "backend":
            backend = words[1]
            if stack is not None:
                stacks.setdefault(backend, stack)
            stack = None
        elif len(words) >= 3 and words[0] == "server" and backend is not None:
            servers.setdefault((backend, words[1]), words[2])
    return Incumbents(hosts, stacks, servers)


@dataclass(frozen=True)
class _Claim:
    host: str
    backend: str
    kind: str  # "stack" or "alias"
    what: str  # the claimant in messages: "stack 'app1'" or "alias 'www' of stack 'app1'"


def _contest(claimants: list[str], incumbent: str | None) -> str | None:
    """The one claimant that keeps a contested name: the incumbent, or none."""
    return incumbent if incumbent in claimants else None


def _lost(others: str, winner: str | None) -> str:
    return f"{others}, which serves it now" if winner else f"{others}; none of them serves it yet, so none gets it"


def build_routing(
    source: SourceData,
    domain: str,
    label: str,
    proxy_label: str = "",
    incumbents: Incumbents = Incumbents(),
) -> Routing:
    """Turn validated containers and service metadata into backends and host routes.

    A contested name (a host label of two stacks, a server name of two containers, a host of a
    stack and an alias or of two aliases) stays with whoever serves it in the live files
    (`incumbents`); when nobody does, every claimant is skipped. The result depends only on the
    content and the incumbents, never on the order."""
    skipped: list[Skipped] = list(source.skipped)
    # host label -> stack -> [(container, server)]; every labelled container claims its stack's
    # host label, routable or not: a stack restarting all its containers keeps its host.
    candidates: dict[str, dict[str, list[tuple[Container, Server]]]] = {}

    for container in sorted(source.containers, key=lambda c: (c.stack, c.service, c.uuid, c.name)):
        for key, kind in container.bad_labels:
            skipped.append(Skipped(f"label {shown(key)} of container {shown(container.name)}", f"is a {kind}, not text"))
        if label not in container.labels:
            continue
        what = f"container {shown(container.name)}"
        backend = host_label(container.stack)
        if not is_dns_label(backend) or len(f"{backend}.{domain}") > 253:
            skipped.append(Skipped(what, f"stack {shown(container.stack)} is not a valid DNS label"))
            continue
        entries = candidates.setdefault(backend, {}).setdefault(container.stack, [])
        result = server_for(container, label, proxy_label)
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        entries.append((container, result))

    # One stack per host label.
    members: dict[str, tuple[str, list[tuple[Container, Server]]]] = {}
    for backend, by_stack in sorted(candidates.items()):
        winner = sorted(by_stack)[0] if len(by_stack) == 1 else _contest(list(by_stack), incumbents.stacks.get(backend))
        for stack, entries in sorted(by_stack.items()):
            if stack == winner:
                if entries:
                    members[backend] = (stack, entries)
                continue
            others = ", ".join(shown(s) for s in sorted(by_stack) if s != stack)
            reason = _lost(f"stack {shown(stack)} has the same host name as stack {others}", winner)
            skipped.extend(Skipped(f"container {shown(c.name)}", reason) for c, _ in entries)

    # One container per server name.
    servers_by_backend: dict[str, list[Server]] = {}
    for backend, (stack, entries) in members.items():
        by_name: dict[str, list[tuple[Container, Server]]] = {}
        for entry in entries:
            by_name.setdefault(entry[1].name, []).append(entry)
        kept = []
        for name, same in by_name.items():
            if len(same) == 1:
                kept.append(same[0][1])
                continue
            live = incumbents.servers.get((backend, name))
            winner = next((c.name for c, s in same if f"{s.address}:{s.port}" == live), None)
            for c, s in same:
                if c.name == winner and s not in kept:
                    kept.append(s)
                    continue
                others = ", ".join(f"container {shown(o.name)}" for o, _ in same if o is not c)
                skipped.append(Skipped(f"container {shown(c.name)}", _lost(f"server name {name} is also claimed by {others}", winner)))
        if kept:
            servers_by_backend[backend] = kept

    stack_of_backend = {backend: members[backend][0] for backend in servers_by_backend}
    routes, alias_skipped = _routes(source, domain, incumbents, servers_by_backend, stack_of_backend, skipped)
    backends = tuple(
        Backend(name=name, stack=stack_of_backend[name], servers=tuple(servers))
        for name, servers in sorted(servers_by_backend.items())
    )
    for backend in backends:
        if len({server.health_path for server in backend.servers}) > 1:
            log.warning("backend %s: its services name different %s paths; TCP health checks only", backend.name, HEALTHCHECK_LABEL)
    return Routing(
        backends=backends,
        routes=tuple(sorted(routes.values(), key=lambda r: r.host)),
        skipped=tuple(skipped + alias_skipped),
    )


def _routes(
    source: SourceData,
    domain: str,
    incumbents: Incumbents,
    servers_by_backend: dict[str, list[Server]],
    stack_of_backend: dict[str, str],
    skipped: list[Skipped],
) -> tuple[dict[str, Route], list[Skipped]]:
    """Hosts of the stacks and their aliases. A stack that loses its own host is dropped with its
    containers (from servers_by_backend, warning in `skipped`), which can settle other contests:
    so contests are decided again until no stack drops."""
    pairs, alias_skipped = _aliases(source.service_metadata)
    stacks_seen = {c.stack for c in source.containers}
    claims: list[_Claim] = []
    for stack, name in sorted(pairs):
        what = f"alias {shown(name)} of stack {shown(stack)}"
        backend = host_label(stack)
        host = alias_host(name, domain)
        # An alias belongs to the stack it names: not to another stack of the same host label.
        if backend not in servers_by_backend or (stack_of_backend[backend] != stack and stack in stacks_seen):
            alias_skipped.append(Skipped(what, "stack has no routed containers", warn=False))
        elif not is_hostname(host):
            alias_skipped.append(Skipped(what, f"{shown(host)} is not a valid host name"))
        else:
            claims.append(_Claim(host, backend, "alias", what))

    while True:
        live = [_Claim(f"{b}.{domain}", b, "stack", f"stack {shown(stack_of_backend[b])}") for b in sorted(servers_by_backend)]
        live += [c for c in claims if c.backend in servers_by_backend]
        by_host: dict[str, list[_Claim]] = {}
        for claim in live:
            by_host.setdefault(claim.host, []).append(claim)
        winners: dict[str, str | None] = {}
        dropped = False
        for host, host_claims in by_host.items():
            backends = sorted({c.backend for c in host_claims})
            # A stack's own host beats an alias unless the alias serves it now (a new stack `www`
            # must not take www.<domain> from the stack whose alias it is); two aliases, neither.
            own = [c.backend for c in host_claims if c.kind == "stack"]
            winners[host] = (
                backends[0] if len(backends) == 1 else _contest(backends, incumbents.hosts.get(host)) or next(iter(own), None)
            )
            for claim in host_claims:
                if claim.kind == "stack" and claim.backend != winners[host]:
                    others = ", ".join(sorted({c.what for c in host_claims if c.backend != claim.backend}))
                    reason = _lost(f"host {host} of stack {shown(stack_of_backend[claim.backend])} is also claimed by {others}", winners[host])
                    for server in servers_by_backend.pop(claim.backend):
                        skipped.append(Skipped(f"container {shown(server.container)}", reason))
                    dropped = True
        if not dropped:
            break

    routes: dict[str, Route] = {}
    for host, host_claims in sorted(by_host.items()):
        winner = winners[host]
        for claim in host_claims:
            if claim.backend == winner:
                routes.setdefault(host, Route(host, claim.backend, claim.kind))
            elif claim.kind == "alias" and winner and incumbents.hosts.get(host) != winner:
                alias_skipped.append(Skipped(claim.what, f"host {host} already routes to {winner}"))
            elif claim.kind == "alias":
                others = ", ".join(sorted({c.what for c in host_claims if c.backend != claim.backend}))
                alias_skipped.append(Skipped(claim.what, _lost(f"host {host} is also claimed by {others}", winner)))
    for claim in claims:
        if claim.backend not in servers_by_backend:
            alias_skipped.append(Skipped(claim.what, "stack has no routed containers", warn=False))
    return routes, alias_skipped
