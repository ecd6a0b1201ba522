"""Servers of the routing stage: the server line of one labelled container (address, port, PROXY
protocol, health check path), validated at the border, or why the container gets no traffic."""

from __future__ import annotations

import ipaddress
import re

from .messages import shown
from .model import HEALTHCHECK_LABEL, PROXY_KEYWORDS, ROUTABLE_HEALTH, Container, Server, Skipped, container_skipped
from .names import identifier

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
    """The server line of one labelled container, or why it gets no traffic. (The message naming
    the container is made only for a skip: most of 10,000 containers get their server.)"""
    if container.state != "running":
        return container_skipped(container.name, f"state is {shown(container.state)}", warn=False)
    if container.health not in ROUTABLE_HEALTH:
        return container_skipped(container.name, f"health_state is {shown(container.health)}", warn=False)
    port = _port(container.labels[label])
    if port is None:
        return container_skipped(container.name, f"label {label}={shown(container.labels[label])} is not a port (1-65535)")
    address = _server_address(container.ip)
    if address is None:
        return container_skipped(container.name, f"primary_ip {shown(container.ip)} is not an IP address")
    proxy = ""
    if proxy_label and proxy_label in container.labels:
        proxy = container.labels[proxy_label].strip()
        if proxy not in PROXY_KEYWORDS:
            return container_skipped(
                container.name, f"label {proxy_label}={shown(container.labels[proxy_label])} is not one of {', '.join(PROXY_KEYWORDS)}"
            )
    health_path = container.labels.get(HEALTHCHECK_LABEL, "")
    if health_path and not _HEALTH_PATH.fullmatch(health_path):
        return container_skipped(container.name, f"label {HEALTHCHECK_LABEL}={health_path!r} is not a URL path (/healthz)")
    return Server(
        name=identifier(f"{container.service}-{container.uuid}"),
        address=address,
        port=port,
        proxy_protocol=proxy,
        container=container.name,
        health_path=health_path,
    )
