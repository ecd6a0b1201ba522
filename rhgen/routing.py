"""Routing stage: SourceData -> the validated, sorted, frozen Routing that templates render.

This is the border: every value that later reaches a template is checked here (ports, IP
addresses, DNS labels, host names, identifiers). A bad container, label, alias or stack is
skipped with a reason naming it and never blocks the others. The result is deterministic: the
same content in any order gives the same routing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from .messages import shown
from .hosts import Claim, contest, incumbents_from, lost, settle
from .labels import Ask, alias_host, asks_of, is_route_host
from .model import (
    HEALTHCHECK_LABEL,
    ROUTABLE_HEALTH,
    Backend,
    Container,
    Incumbents,
    PathRoute,
    Route,
    Routing,
    Server,
    Skipped,
    SourceData,
    container_skipped,
)
from .names import dns_lower, identifier, is_dns_label
from .servers import server_for

log = logging.getLogger(__name__)

__all__ = ["build_routing", "incumbents_from", "server_for", "alias_host", "host_label"]

DEFAULT_ROUTE_HOST = "{route}-{stack}"
FALLBACK = "rhgen_fallback"  # the backend without servers (503), in haproxy.cfg

def host_label(stack: str) -> str:
    """The host label of a stack: ASCII lower case, `_` as `-` (Compose project names such as
    rt_proj hold `_`, which a host name cannot). Callers check it is a DNS label."""
    return dns_lower(stack).replace("_", "-")


@dataclass(frozen=True, slots=True)
class _Entry:
    container: Container
    ask: Ask
    server: Server


def _wants_routing(container: Container, label: str) -> bool:
    if label in container.labels:
        return True
    prefix = label + "."
    return any(key.startswith(prefix) for key in container.labels)


def build_routing(
    source: SourceData,
    domain: str,
    label: str,
    proxy_label: str = "",
    incumbents: Incumbents = Incumbents(),
    route_host: str = DEFAULT_ROUTE_HOST,
) -> Routing:
    """Turn validated containers and service metadata into backends, host routes and path routes.

    A contested name (a host label of two stacks, a server name of two containers, a host of a
    stack and an alias or of two aliases) stays with whoever serves it in the live files
    (`incumbents`); when nobody does, every claimant is skipped. The result depends only on the
    content and the incumbents, never on the order."""
    skipped: list[Skipped] = list(source.skipped)
    # host label -> stack -> [entry]; every labelled container claims its stack's host label,
    # routable or not: a stack restarting all its containers keeps its host.
    candidates: dict[str, dict[str, list[_Entry]]] = {}
    sites: dict[str, str | None] = {}  # stack -> its host label, None when it makes no host: once per stack

    for container in sorted(source.containers, key=lambda c: (c.stack, c.service, c.uuid, c.name)):
        for key, kind in container.bad_labels:
            skipped.append(Skipped(f"label {shown(key)} of container {shown(container.name)}", f"is a {kind}, not text"))
        if not _wants_routing(container, label):
            continue
        if container.stack not in sites:
            site = host_label(container.stack)
            sites[container.stack] = site if is_dns_label(site) and len(f"{site}.{domain}") <= 253 else None
        site = sites[container.stack]
        if site is None:
            skipped.append(container_skipped(container.name, f"stack {shown(container.stack)} is not a valid DNS label"))
            continue
        entries = candidates.setdefault(site, {}).setdefault(container.stack, [])
        if container.state != "running" or container.health not in ROUTABLE_HEALTH:
            skipped.append(server_for(container, label, proxy_label))  # the ordinary, quiet skip
            continue
        asks, refused = asks_of(container, label)
        skipped.extend(refused)
        for ask in asks:
            result = server_for(container, ask.port_label, proxy_label)
            if isinstance(result, Skipped):
                skipped.append(result)
                if ask.route:  # the label names the route: the one container line says which
                    continue
                break
            entries.append(_Entry(container, ask, result))

    # One stack per host label.
    members: dict[str, tuple[str, list[_Entry]]] = {}
    for site, by_stack in sorted(candidates.items()):
        winner = sorted(by_stack)[0] if len(by_stack) == 1 else contest(list(by_stack), incumbents.stacks.get(site))
        for stack, entries in sorted(by_stack.items()):
            if stack == winner:
                if entries:
                    members[site] = (stack, entries)
                continue
            others = ", ".join(shown(s) for s in sorted(by_stack) if s != stack)
            reason = lost(f"stack {shown(stack)} has the same host name as stack {others}", winner)
            skipped.extend(container_skipped(c, reason) for c in sorted({e.container.name for e in entries}))

    # One backend per route and path of a stack; its containers must agree on the options.
    groups: dict[str, dict[tuple[str, str], list[_Entry]]] = {}
    for site, (stack, entries) in members.items():
        by_key: dict[tuple[str, str], list[_Entry]] = {}
        for entry in entries:
            by_key.setdefault((entry.ask.route, entry.ask.path), []).append(entry)
        clash = next((_contradiction(site, domain, route_host, key, same) for key, same in sorted(by_key.items())
                      if len({e.ask.options for e in same}) > 1), None)
        if clash:
            skipped.append(Skipped(f"stack {shown(stack)}", clash))
            continue
        groups[site] = by_key

    backends: dict[str, Backend] = {}
    for site, by_key in groups.items():
        names = _backend_names(site, list(by_key))
        for key, same in sorted(by_key.items()):
            servers = _unique_servers(names[key], same, incumbents, skipped)
            if servers:
                ask = same[0].ask
                backends[names[key]] = Backend(names[key], members[site][0], tuple(servers), ask.route, ask.path,
                                               ask.strip, ask.auth, ask.allow)

    routes, paths, host_skipped = _routes(source, domain, route_host, incumbents, members, backends, skipped)
    for backend in backends.values():
        if len({server.health_path for server in backend.servers}) > 1:
            log.warning("backend %s: its services name different %s paths; TCP health checks only", backend.name, HEALTHCHECK_LABEL)
    served = {r.backend for r in routes.values()} | {p.backend for p in paths}
    return Routing(
        backends=tuple(backends[name] for name in sorted(backends) if name in served),
        routes=tuple(sorted(routes.values(), key=lambda r: r.host)),
        skipped=tuple(skipped + host_skipped),
        paths=tuple(sorted(paths, key=lambda p: (p.site, -len(p.prefix), p.prefix))),
    )


def _contradiction(site: str, domain: str, route_host: str, key: tuple[str, str], same: list[_Entry]) -> str:
    """One line naming two containers that ask for different things on one host and path."""
    route, path = key
    first = same[0]
    other = next(e for e in same if e.ask.options != first.ask.options)
    differ = [word for word, a, b in zip(("strip", "auth", "allow"), first.ask.options, other.ask.options) if a != b]
    host = f"{route_host.format(route=route, stack=site)}.{domain}" if route else f"{site}.{domain}"
    return (f"containers {shown(first.container.name)} and {shown(other.container.name)} ask for different "
            f"{' and '.join(differ)} on {host} path {path or '/'}; the stack is not served")


def _backend_names(site: str, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The stack's default route keeps the seed's name (the stack label); a named route is
    <label>:<route>, a path <label>_<path as identifier>. A DNS label holds neither ':' nor '_',
    so no name can be another stack's; two paths of one stack that read the same get a digest."""
    names = {key: site if key == ("", "") else f"{site}:{key[0]}" if key[0] else f"{site}{identifier(key[1])}" for key in keys}
    for key, name in names.items():
        if key[1] and list(names.values()).count(name) > 1:
            names[key] = f"{name}.{hashlib.sha256(key[1].encode()).hexdigest()[:8]}"
    return names


def _unique_servers(backend: str, entries: list[_Entry], incumbents: Incumbents, skipped: list[Skipped]) -> list[Server]:
    """One container per server name in a backend: whoever the live backend has, else none."""
    by_name: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_name.setdefault(entry.server.name, []).append(entry)
    kept: list[Server] = []
    for name, same in by_name.items():
        if len(same) == 1:
            kept.append(same[0].server)
            continue
        live = incumbents.servers.get((backend, name))
        winner = next((e.container.name for e in same if f"{e.server.address}:{e.server.port}" == live), None)
        for entry in same:
            if entry.container.name == winner and entry.server not in kept:
                kept.append(entry.server)
                continue
            others = ", ".join(f"container {shown(o.container.name)}" for o in same if o is not entry)
            reason = lost(f"server name {name} is also claimed by {others}", winner)
            skipped.append(container_skipped(entry.container.name, reason))
    return kept


def _routes(
    source: SourceData,
    domain: str,
    route_host: str,
    incumbents: Incumbents,
    members: dict[str, tuple[str, list[_Entry]]],
    backends: dict[str, Backend],
    skipped: list[Skipped],
) -> tuple[dict[str, Route], list[PathRoute], list[Skipped]]:
    """Hosts of every site (the stack's own, named routes', aliases and wildcards) and the path
    routes of the default sites. A stack that loses its own host is dropped with its containers
    (their backends removed, a warning in `skipped`)."""
    host_skipped: list[Skipped] = list(source.skipped_aliases)
    by_site: dict[str, list[Backend]] = {}
    for backend in backends.values():
        by_site.setdefault(backend.site, []).append(backend)
    stack_of = {site: members[site][0] for site in by_site}
    stacks_seen = {c.stack for c in source.containers}
    stack_aliases: dict[str, set[tuple[str, str]]] = {}  # the source's aliases by stack, looked up per site
    for alias in source.aliases:
        stack_aliases.setdefault(alias.stack, set()).add(("", alias.name))
    claims: list[Claim] = []

    def claim(host: str, site: str, owner: str, kind: str, what: str, route: str = "") -> None:
        if not is_route_host(host):
            host_skipped.append(Skipped(what, f"{shown(host)} is not a valid host name"))
        else:
            claims.append(Claim(host, site, owner, kind, what, route))

    for site in sorted(by_site):
        stack = stack_of[site]
        routed = {(b.route, b.path) for b in by_site[site]}
        if any(not route for route, _ in routed):
            claims.append(Claim(f"{site}.{domain}", site, site, "stack", f"stack {shown(stack)}"))
        for route in sorted({route for route, _ in routed if route}):
            name = f"{route_host.format(route=route, stack=site)}.{domain}"
            claim(name, f"{site}:{route}", site, "route", f"route {shown(route)} of stack {shown(stack)}", route)
        aliases = {(e.ask.route, name) for e in members[site][1] for name in e.ask.aliases}
        # The Docker source already gives rhgen.aliases as the stack's aliases: claimed once, below.
        aliases -= stack_aliases.get(stack, set())
        for route, name in sorted(aliases):
            target = f"{site}:{route}" if route else site
            if not any(r == route for r, _ in routed):  # the route's containers are all skipped
                continue
            claim(alias_host(name, domain), target, site, "alias", f"alias {shown(name)} of stack {shown(stack)}", route)
    for stack, name in sorted((alias.stack, alias.name) for alias in source.aliases):
        what = f"alias {shown(name)} of stack {shown(stack)}"
        site = host_label(stack)
        # An alias belongs to the stack it names: not to another stack of the same host label.
        if site not in stack_of or (stack_of[site] != stack and stack in stacks_seen) or not any(
            not b.route for b in by_site[site]
        ):
            host_skipped.append(Skipped(what, "stack has no routed containers", warn=False))
        else:
            claim(alias_host(name, domain), site, site, "alias", what)

    def drop(owner: str, reason: str) -> None:
        for backend in by_site.pop(owner):
            del backends[backend.name]
            skipped.extend(container_skipped(server.container, reason) for server in backend.servers)

    routes, lost_hosts = settle(claims, lambda: set(by_site), incumbents, drop)
    paths = []
    for site, site_backends in sorted(by_site.items()):
        prefixes = {b.path: b.name for b in site_backends if not b.route}
        if any(prefixes) and any(r.backend == site for r in routes.values()):
            paths += [PathRoute(site, prefix, name) for prefix, name in prefixes.items()]
            if "" not in prefixes:
                paths.append(PathRoute(site, "", FALLBACK))
    return routes, paths, host_skipped + lost_hosts
