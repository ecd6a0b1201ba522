"""Host names of the routing stage: who gets which host (a stack's own, a named route's, aliases,
wildcards), decided the same way whatever the order, and the live files' incumbents.

A host routes to a *site*: the backend's name for a site without path routes, else the site whose
path routes (model.PathRoute) pick the backend. A contested host stays with whoever serves it in
the live files; when nobody does, a stack's own host beats an alias or a route host, and two
aliases or route hosts get nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .model import Incumbents, Route, Skipped

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Claim:
    host: str
    site: str  # what the map routes the host to
    owner: str  # the stack label (the stack's default site) whose routing this is part of
    kind: str  # "stack", "alias" or "route"
    what: str  # the claimant in messages: "stack 'app1'" or "alias 'www' of stack 'app1'"
    route: str = ""


def incumbents_from(domain_map: bytes | None, backends: bytes | None) -> Incumbents:
    """The incumbents of the live domain.map and backends.cfg (as the bundled templates write them);
    lines of any other shape are ignored, so a customised template only means fewer incumbents.

    Each file is parsed on the first look into it: only a contested name looks, and most runs have
    none (at 10,000 containers the parse costs 15 ms and its mappings 3 MB)."""
    backends_parsed = functools.cache(lambda: _backends(backends))
    return Incumbents(
        _OnFirstLook(lambda: _hosts(domain_map)),
        _OnFirstLook(lambda: backends_parsed()[0]),
        _OnFirstLook(lambda: backends_parsed()[1]),
    )


class _OnFirstLook(Mapping[K, V]):
    """A read-only mapping made by `make` when it is first looked into."""

    def __init__(self, make: Callable[[], Mapping[K, V]]) -> None:
        self._make: Callable[[], Mapping[K, V]] | None = make
        self._made: Mapping[K, V] = {}

    def _mapping(self) -> Mapping[K, V]:
        if self._make is not None:
            self._made, self._make = self._make(), None
        return self._made

    def __getitem__(self, key: K) -> V:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())


def _hosts(domain_map: bytes | None) -> dict[str, str]:
    hosts: dict[str, str] = {}
    for line in (domain_map or b"").decode("utf-8", "replace").splitlines():
        words = line.split()
        if len(words) == 2 and not words[0].startswith("#"):
            hosts.setdefault(words[0], words[1])
    return hosts


def _backends(backends: bytes | None) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
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
    return stacks, servers


def contest(claimants: list[str], incumbent: str | None) -> str | None:
    """The one claimant that keeps a contested name: the incumbent, or none."""
    return incumbent if incumbent in claimants else None


def lost(others: str, winner: str | None) -> str:
    return f"{others}, which serves it now" if winner else f"{others}; none of them serves it yet, so none gets it"


def settle(
    claims: list[Claim],
    owners: Callable[[], set[str]],
    incumbents: Incumbents,
    drop: Callable[[str, str], None],
) -> tuple[dict[str, Route], list[Skipped]]:
    """Decide every host of `claims`. A stack that loses its own host is dropped (`drop(owner,
    reason)`), which can settle other contests: so contests are decided again until none drops.
    `owners()` is the set of stack labels still routed."""
    skipped: list[Skipped] = []
    while True:
        alive = owners()
        by_host: dict[str, list[Claim]] = {}
        for claim in claims:
            if claim.owner in alive:
                by_host.setdefault(claim.host, []).append(claim)
        winners: dict[str, str | None] = {}
        dropped: set[str] = set()
        for host, host_claims in by_host.items():
            sites = sorted({c.site for c in host_claims})
            # A stack's own host beats an alias unless the alias serves it now (a new stack `www`
            # must not take www.<domain> from the stack whose alias it is); two aliases, neither.
            own = [c.site for c in host_claims if c.kind == "stack"]
            winners[host] = sites[0] if len(sites) == 1 else contest(sites, incumbents.hosts.get(host)) or next(iter(own), None)
            for claim in host_claims:
                if claim.kind == "stack" and claim.site != winners[host] and claim.owner not in dropped:
                    others = ", ".join(sorted({c.what for c in host_claims if c.site != claim.site}))
                    drop(claim.owner, lost(f"host {host} of {claim.what} is also claimed by {others}", winners[host]))
                    dropped.add(claim.owner)
        if not dropped:
            break

    routes: dict[str, Route] = {}
    for host, host_claims in sorted(by_host.items()):
        winner = winners[host]
        for claim in host_claims:
            if claim.site == winner:
                routes.setdefault(host, Route(host, claim.site, claim.kind, claim.route))
            elif claim.kind != "stack" and winner and incumbents.hosts.get(host) != winner:
                skipped.append(Skipped(claim.what, f"host {host} already routes to {winner}"))
            elif claim.kind != "stack":
                others = ", ".join(sorted({c.what for c in host_claims if c.site != claim.site}))
                skipped.append(Skipped(claim.what, lost(f"host {host} is also claimed by {others}", winner)))
    alive = owners()
    for claim in claims:
        if claim.owner not in alive and claim.kind != "stack":
            skipped.append(Skipped(claim.what, "stack has no routed containers", warn=False))
    return routes, skipped
