"""The model: frozen dataclasses every stage shares, from what a source delivers (SourceData of
Containers and Aliases) to what templates see (Routing of Backends, Servers and Routes).

Sources build Containers and Aliases from their own answers, type-checked (text is text);
routing.py then checks what reaches a template (ports, addresses, names) and builds the Routing.

The classes made once per container or server are slotted: at 10,000 containers that is 50,000
objects, each 48 bytes smaller without its own attribute dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .messages import shown

# Rancher's own balancer sends traffic only to these health states (None/empty included).
ROUTABLE_HEALTH = {None, "", "healthy", "updating-healthy"}
HEALTHCHECK_LABEL = "rhgen.healthcheck"  # value: the path of an HTTP health check, e.g. /healthz
WILDCARD_LABELS = 8  # a wildcard has at most this many labels after `*.` (*.shop.dev.tld: 3)
PROXY_KEYWORDS = ("send-proxy", "send-proxy-v2", "send-proxy-v2-ssl", "send-proxy-v2-ssl-cn")


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, order=True, slots=True)
class Alias:
    """One more host name for a stack: `www` (gets the stack domain) or a full `shop.example.com`."""

    stack: str
    name: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something from the source that gets no traffic, and why."""

    what: str
    reason: str
    warn: bool = True  # False for the ordinary (stopped, unhealthy) cases


def container_skipped(name: str, reason: str, warn: bool = True) -> Skipped:
    """A container that gets no traffic, named as every stage names it. Made only for a skip: the
    message text is not built for the thousands of containers that pass."""
    return Skipped(f"container {shown(name)}", reason, warn)


@dataclass(frozen=True)
class SourceData:
    """What every source returns: containers, the aliases of their stacks, the containers and the
    aliases it could not read (and why), and the proxy service's own metadata (Rancher's ssl_cert,
    ssl_key; else empty)."""

    containers: tuple[Container, ...]
    aliases: tuple[Alias, ...] = ()
    skipped: tuple[Skipped, ...] = ()  # containers (tasks, services) left out
    skipped_aliases: tuple[Skipped, ...] = ()  # warned about after the containers, as routing's own alias skips
    service_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    address: str  # host part as written in haproxy.cfg ("10.0.0.1" or "[fd00::1]")
    port: int
    proxy_protocol: str  # "" or one of PROXY_KEYWORDS
    container: str
    health_path: str = ""  # HTTP check path from the rhgen.healthcheck label; "" checks TCP only


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    stack: str
    servers: tuple[Server, ...]
    route: str = ""  # "" is the stack's default route, else a named route (map-public-http.<route>)
    path: str = ""  # the path prefix it serves on its route's hosts; "" is the whole host
    strip: bool = False  # remove `path` before forwarding
    auth: tuple[tuple[str, str], ...] = ()  # (user, crypt hash): HTTP basic auth
    allow: tuple[str, ...] = ()  # client networks let in; () is everyone

    @property
    def userlist(self) -> str:
        """Its userlist's name: `rhgen_` names never collide with a stack's (DNS labels)."""
        return f"rhgen_auth_{self.name}"

    @property
    def site(self) -> str:
        """The label of the stack it belongs to: health checks send <site>.<domain> as Host."""
        return re.split("[:_]", self.name, maxsplit=1)[0]  # a DNS label holds neither

    @property
    def health_path(self) -> str:
        """The HTTP check path when every server names the same one (a check is per backend in
        haproxy); otherwise "" and the servers get a plain TCP check."""
        paths = {server.health_path for server in self.servers}
        return paths.pop() if len(paths) == 1 else ""


@dataclass(frozen=True, slots=True)
class Route:
    """A host and the site it routes to: a backend's name, or (with path routes) the site whose
    PathRoutes choose the backend."""

    host: str  # a host name, or *.<suffix> for every host under it
    backend: str
    kind: str  # "stack", "alias" or "route" (a named route's own host)
    route: str = ""


@dataclass(frozen=True, slots=True)
class PathRoute:
    """Requests to `site` whose path starts with `prefix` (on a segment boundary) go to `backend`."""

    site: str
    prefix: str  # "" matches every path: the site's default
    backend: str

    @property
    def key(self) -> str:
        """The map key looked up with map_beg on PATH:<site><path>/ (the request's path with a
        slash added, so /api matches /api and /api/x, never /apix). Upper case: no host lookup,
        which is lower-cased, can ever find it."""
        return f"PATH:{self.site}{self.prefix}/"


@dataclass(frozen=True)
class Routing:
    backends: tuple[Backend, ...]
    routes: tuple[Route, ...]
    skipped: tuple[Skipped, ...] = field(default=())
    paths: tuple[PathRoute, ...] = ()  # longest prefix first

    @property
    def wildcard_depths(self) -> tuple[int, ...]:
        """The label counts after `*.` the frontend tries, most first (the longest suffix wins).
        Always all of them, whatever the routing: haproxy.cfg stays the same when wildcards come
        and go, so they are map changes (reload-free through the runtime API)."""
        return tuple(range(WILDCARD_LABELS, 0, -1))

    @property
    def server_count(self) -> int:
        return sum(len(b.servers) for b in self.backends)


@dataclass(frozen=True)
class Incumbents:
    """What the live files serve now, read once at the edge: who keeps a contested name.

    A newcomer (a stack named APP1 beside app1, a second container with the same uuid) must
    not take over what is served; when nobody serves a contested name yet, nobody gets it.
    """

    hosts: Mapping[str, str] = field(default_factory=dict)  # host -> backend, from domain.map
    stacks: Mapping[str, str] = field(default_factory=dict)  # backend -> stack, from backends.cfg's "# stack" lines
    servers: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (backend, server) -> "address:port"


def text_labels(labels: Mapping[Any, Any]) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """Label values as text, for every source. Docker and Rancher send strings; a YAML answers file
    sends `map-public-http: 8080` as a number, which is a port too. Any other kind (true, 1.5, a
    list) is kept out and named, so the container's warning says which label was ignored."""
    if all(type(key) is str and type(value) is str for key, value in labels.items()):
        return dict(labels) if not isinstance(labels, dict) else labels, ()  # the common case: no copy
    values, bad = {}, []
    for key, value in labels.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, str):
            values[key] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            values[key] = str(value)
        else:
            bad.append((key, json_kind(value)))
    return values, tuple(sorted(bad))


def json_kind(value: Any) -> str:
    """What a JSON value is, in the words of a message: mapping, list, string, number, boolean, null."""
    kinds = {dict: "mapping", list: "list", str: "string", type(None): "null", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)
