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
    what = f"container {name!r}"
    labels = item.get("labels") or {}
    if not isinstance(labels, dict):
        return Skipped(what, "labels is not an object")
    labels = {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}
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
    )


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
    what = f"container {container.name!r}"
    if container.state != "running":
        return Skipped(what, f"state is {container.state!r}", warn=False)
    if container.health not in ROUTABLE_HEALTH:
        return Skipped(what, f"health_state is {container.health!r}", warn=False)
    port = _port(container.labels[label])
    if port is None:
        return Skipped(what, f"label {label}={container.labels[label]!r} is not a port (1-65535)")
    address = _server_address(container.ip)
    if address is None:
        return Skipped(what, f"primary_ip {container.ip!r} is not an IP address")
    proxy = ""
    if proxy_label and proxy_label in container.labels:
        proxy = container.labels[proxy_label].strip()
        if proxy not in PROXY_KEYWORDS:
            return Skipped(
                what, f"label {proxy_label}={container.labels[proxy_label]!r} is not one of {', '.join(PROXY_KEYWORDS)}"
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
            skipped.append(Skipped(f"aliases of {stack!r}", "is not a list of names"))
            continue
        for name in names:
            if not isinstance(name, str):
                skipped.append(Skipped(f"alias {name!r} of stack {stack!r}", "is not a string"))
                continue
            pairs.append((stack, name))
    return pairs, skipped


def alias_host(name: str, domain: str) -> str:
    """A name with a dot is a full host name; any other becomes <name>.<domain>."""
    host = normalise_hostname(name)
    return host if "." in host else f"{host}.{domain}"


def build_routing(
    source: SourceData,
    domain: str,
    label: str,
    proxy_label: str = "",
) -> Routing:
    """Turn validated containers and service metadata into backends and host routes."""
    skipped: list[Skipped] = list(source.skipped)
    servers_by_backend: dict[str, list[Server]] = {}
    stack_of_backend: dict[str, str] = {}

    for container in sorted(source.containers, key=lambda c: (c.stack, c.service, c.uuid, c.name)):
        if label not in container.labels:
            continue
        backend = dns_lower(container.stack)
        if not is_dns_label(backend) or len(f"{backend}.{domain}") > 253:
            skipped.append(Skipped(f"container {container.name!r}", f"stack {container.stack!r} is not a valid DNS label"))
            continue
        result = server_for(container, label, proxy_label)
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        owner = stack_of_backend.setdefault(backend, container.stack)
        if owner != container.stack:
            skipped.append(
                Skipped(f"container {container.name!r}", f"stack {container.stack!r} has the same host name as stack {owner!r}")
            )
            continue
        servers = servers_by_backend.setdefault(backend, [])
        if any(s.name == result.name for s in servers):
            skipped.append(Skipped(f"container {container.name!r}", f"server name {result.name} is already used"))
            continue
        servers.append(result)

    backends = tuple(
        Backend(name=name, stack=stack_of_backend[name], servers=tuple(servers))
        for name, servers in sorted(servers_by_backend.items())
    )
    for backend in backends:
        if len({server.health_path for server in backend.servers}) > 1:
            log.warning("backend %s: its services name different %s paths; TCP health checks only", backend.name, HEALTHCHECK_LABEL)
    routes = {f"{b.name}.{domain}": Route(f"{b.name}.{domain}", b.name, "stack") for b in backends}

    pairs, alias_skipped = _aliases(source.service_metadata)
    skipped.extend(alias_skipped)
    for stack, name in sorted(pairs):
        what = f"alias {name!r} of stack {stack!r}"
        backend = dns_lower(stack)
        host = alias_host(name, domain)
        if backend not in servers_by_backend:
            skipped.append(Skipped(what, "stack has no routed containers", warn=False))
        elif not is_hostname(host):
            skipped.append(Skipped(what, f"{host!r} is not a valid host name"))
        elif host in routes and routes[host].backend != backend:
            skipped.append(Skipped(what, f"host {host} already routes to {routes[host].backend}"))
        else:
            routes.setdefault(host, Route(host, backend, "alias"))

    return Routing(
        backends=backends,
        routes=tuple(sorted(routes.values(), key=lambda r: r.host)),
        skipped=tuple(skipped),
    )
