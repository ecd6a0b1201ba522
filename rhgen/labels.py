"""Routing labels of one container, parsed and validated at the border (part of the routing stage).

`map-public-http=<port>` asks for the stack's default route, `map-public-http.<route>=<port>` for
a named route; the rhgen.* labels add a path prefix (and strip), aliases, basic auth and an allow
list. Whatever passes here can be written into haproxy.cfg, backends.cfg or the map unquoted;
whatever does not becomes a Skipped naming the container and the label. A label asking for a
restriction (auth, allow, path) that cannot be honoured refuses the route: it is never served
without what it asked for.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .messages import shown
from .model import WILDCARD_LABELS, Container, Skipped
from .names import is_dns_label, is_hostname, normalise_hostname

PATH_LABEL = "rhgen.path"
STRIP_LABEL = "rhgen.path.strip"
ALIASES_LABEL = "rhgen.aliases"
AUTH_LABEL = "rhgen.auth"
ALLOW_LABEL = "rhgen.allow"

MAX_PATH = 256
MAX_LIST = 64  # users, networks or aliases in one label: each becomes a word of one line
# A path prefix: printable ASCII without space, '#', quotes, '%' (the rule), and without
# '\' (an escape in haproxy files) and '?' (never part of a request path).
_PATH = re.compile(r"/[!$&()*+,\-./0-9:;<=>@A-Z\[\]^_a-z{|}~]*\Z")
_USER = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_B64 = r"[./A-Za-z0-9]"
# crypt(3) hashes haproxy's `password` takes (through libxcrypt): SHA-256/512-crypt, bcrypt, yescrypt.
_HASHES = (
    re.compile(rf"\$5\$(?:rounds=[0-9]{{1,9}}\$)?{_B64}{{0,16}}\${_B64}{{43}}\Z"),
    re.compile(rf"\$6\$(?:rounds=[0-9]{{1,9}}\$)?{_B64}{{0,16}}\${_B64}{{86}}\Z"),
    re.compile(rf"\$2[aby]\$[0-9]{{2}}\${_B64}{{53}}\Z"),
    re.compile(rf"\$(?:y|gy)\${_B64}{{1,60}}\${_B64}{{1,86}}\${_B64}{{43}}\Z"),
)


@dataclass(frozen=True)
class Ask:
    """One route a container asks for: the default one (route "") or a named one."""

    route: str
    port_label: str  # the label holding the port
    path: str = ""  # "" is the whole host
    strip: bool = False
    aliases: tuple[str, ...] = ()  # host names (and *.wildcards) for this route, as written
    auth: tuple[tuple[str, str], ...] = ()  # (user, crypt hash)
    allow: tuple[str, ...] = ()  # networks, normalised

    @property
    def options(self) -> tuple[Any, ...]:
        """What containers sharing one host and path must agree on."""
        return (self.strip, self.auth, self.allow)


def parse_path(value: str) -> str:
    """`/api` (or `/api/`) -> "/api"; "/" -> "" (the whole host). ValueError says why not."""
    if len(value.encode("utf-8")) > MAX_PATH:
        raise ValueError(f"is longer than {MAX_PATH} bytes")
    if not _PATH.match(value):
        raise ValueError("is not a path prefix (/ then printable ASCII without space, #, quotes, %, \\ or ?)")
    return value.rstrip("/")


def parse_strip(value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("is not true or false")


def _items(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or any(not item for item in items):
        raise ValueError("has an empty item")
    if len(items) > MAX_LIST:
        raise ValueError(f"has more than {MAX_LIST} items")
    return items


def parse_auth(value: str) -> tuple[tuple[str, str], ...]:
    users: dict[str, str] = {}
    for item in _items(value):
        user, _, hashed = item.partition(":")
        if not _USER.match(user):
            raise ValueError(f"user {shown(user)} is not a user name ([A-Za-z0-9._-], 1-64)")
        if not any(pattern.match(hashed) for pattern in _HASHES):
            raise ValueError(f"user {user}: the password is not a crypt(3) hash ($5$, $6$, $2b$, $y$); plain text is refused")
        if user in users:
            raise ValueError(f"user {user} is named twice")
        users[user] = hashed
    return tuple(sorted(users.items()))


def parse_allow(value: str) -> tuple[str, ...]:
    networks = set()
    for item in _items(value):
        if not item.isascii() or any(ch not in string.hexdigits + ".:/" for ch in item):
            raise ValueError(f"{shown(item)} is not an IPv4 or IPv6 network")
        try:
            networks.add(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{shown(item)} is not an IPv4 or IPv6 network") from None
    return tuple(str(n) for n in sorted(networks, key=lambda n: (n.version, n)))


def parse_route_name(name: str) -> str:
    if not is_dns_label(name):
        raise ValueError("is not a route name (a DNS label: a-z, 0-9, -)")
    return name


def alias_host(name: str, domain: str) -> str:
    """A name with a dot is a full host name; any other becomes <name>.<domain>. A wildcard
    `*.shop` is every host under shop.<domain>, `*.shop.example.com` under shop.example.com."""
    host = normalise_hostname(name)
    if host.startswith("*") and not host.startswith("*."):
        return host  # a bare `*` (or `*.`): refused by is_route_host, never <domain>'s wildcard
    if host.startswith("*."):
        rest = host[2:]
        return "*." + (rest if "." in rest else f"{rest}.{domain}")
    return host if "." in host else f"{host}.{domain}"


def is_route_host(host: str) -> bool:
    """A host name, or `*.` followed by one of at most WILDCARD_LABELS labels (a bare `*` or `*.` is not)."""
    if host.startswith("*."):
        return is_hostname(host[2:]) and host.count(".") <= WILDCARD_LABELS
    return is_hostname(host)


def parse_route_host(raw: Any) -> str:
    """RHGEN_ROUTE_HOST: a pattern of {route} and {stack}, e.g. {route}-{stack}."""
    text = "" if raw is None else str(raw)
    try:
        fields = {name for _, name, spec, conv in string.Formatter().parse(text) if name is not None}
        sample = text.format(route="r", stack="s")
    except (ValueError, IndexError, KeyError):
        raise ValueError("is not a pattern of {route} and {stack}") from None
    if "route" not in fields or not fields <= {"route", "stack"}:
        raise ValueError("must name {route} and may name {stack}, nothing else")
    if not is_hostname(sample):
        raise ValueError("does not make a host name (DNS labels around {route} and {stack})")
    return text


@functools.lru_cache(maxsize=8)
def _default_only(label: str) -> tuple[Ask, ...]:
    """The asks of a container with only the port label: one shared, immutable Ask (the seed's
    case, 10,000 times a run at 10,000 containers, each of which would otherwise build its own)."""
    return (Ask("", label),)


def asks_of(container: Container, label: str) -> tuple[Sequence[Ask], Sequence[Skipped]]:
    """The routes `container` asks for, or why a label (and so a route) is refused."""
    labels = container.labels
    prefix = label + "."
    keys = "\n" + "\n".join(labels)  # one scan in C: most containers carry no routing option
    if "\nrhgen." not in keys and "\n" + prefix not in keys:
        return (_default_only(label) if label in labels else ()), ()
    skipped: list[Skipped] = []
    who = f"container {shown(container.name)}"

    def refuse(key: str, error: ValueError, consequence: str) -> None:
        # A refused auth label may hold a plain-text password: its value is never shown.
        value = "" if key == AUTH_LABEL else f"{shown(labels[key])} "
        skipped.append(Skipped(f"label {shown(key)} of {who}", f"{value}{error}; {consequence}"))

    def parsed(key: str, parse: Any, default: Any, consequence: str) -> Any:
        if key not in labels:
            return default
        try:
            return parse(labels[key])
        except ValueError as error:
            refuse(key, error, consequence)
            return None

    routes = {"": label} if label in labels else {}
    for key in sorted(labels):
        if key.startswith(label + "."):
            try:
                routes[parse_route_name(key[len(label) + 1:])] = key
            except ValueError as error:
                refuse(key, error, "this route is not served")
    auth = parsed(AUTH_LABEL, parse_auth, (), "no route of this container is served")
    allow = parsed(ALLOW_LABEL, parse_allow, (), "no route of this container is served")
    path = parsed(PATH_LABEL, parse_path, "", "its default route is not served")
    strip = parsed(STRIP_LABEL, parse_strip, False, "its default route is not served")
    if auth is None or allow is None:
        return [], skipped
    for key in sorted(labels):
        if key.startswith(ALIASES_LABEL + ".") and key[len(ALIASES_LABEL) + 1:] not in routes:
            skipped.append(Skipped(f"label {shown(key)} of {who}", "names no route of this container; ignored"))
    asks = []
    for route, port_label in sorted(routes.items()):
        if not route and (path is None or strip is None):
            continue
        aliases = []
        key = ALIASES_LABEL + (f".{route}" if route else "")
        if key in labels:
            try:
                names = _items(labels[key])
            except ValueError as error:
                refuse(key, error, "no alias of it is used")
                names = []
            aliases += names  # checked as host names where the stack's aliases are (routing)
        asks.append(Ask(route, port_label, path if not route else "", bool(strip) and bool(path) and not route, tuple(aliases), auth, allow))
    return asks, skipped
