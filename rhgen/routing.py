"""Routing stage: SourceData -> the validated, sorted, frozen Routing that templates render.

This is the border: every value that later reaches a template is checked here (ports, IP
addresses, DNS labels, host names, identifiers). A bad container, label, alias or stack is
skipped with a reason naming it and never blocks the others. The result is deterministic: the
same content in any order gives the same routing.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

from .messages import shown
from .model import (
    HEALTHCHECK_LABEL,
    PROXY_KEYWORDS,
    ROUTABLE_HEALTH,
    Backend,
    Container,
    Incumbents,
    Route,
    Routing,
    Server,
    Skipped,
    SourceData,
)
from .names import dns_lower, identifier, is_dns_label, is_hostname, normalise_hostname

log = logging.getLogger(__name__)

# A path haproxy takes as one word: no spaces, quotes, '#' or backslashes.
_HEALTH_PATH = re.compile(r"/[A-Za-z0-9._~/%?=&+:@,!$*-]{0,200}")

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


def alias_host(name: str, domain: str) -> str:
    """A name with a dot is a full host name; any other becomes <name>.<domain>."""
    host = normalise_hostname(name)
    return host if "." in host else f"{host}.{domain}"


def host_label(stack: str) -> str:
    """The host label of a stack: ASCII lower case, `_` as `-` (Compose project names such as
    rt_proj hold `_`, which a host name cannot). Callers check it is a DNS label."""
    return dns_lower(stack).replace("_", "-")


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
    alias_skipped: list[Skipped] = list(source.skipped_aliases)
    stacks_seen = {c.stack for c in source.containers}
    claims: list[_Claim] = []
    for stack, name in sorted((alias.stack, alias.name) for alias in source.aliases):
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
