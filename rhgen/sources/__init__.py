"""Fetch stage: where containers come from. One module per source, each a `Source`: `fetch` returns
model objects (SourceData), `watch` calls notify() when they may have changed. A new source is a
new module here and one line in REGISTRY; nothing else dispatches on the source's name.

    rancher  Rancher 1.x metadata service (long-polls /version)
    docker   Docker Engine containers (follows /events)
    swarm    Docker Swarm services and tasks (events and a task poll)
    file     an answers file in the Rancher shapes (polled)

answers.py reads the Rancher shapes (rancher and file), http.py is the one JSON-over-HTTP client
(rancher, docker, swarm), engine.py the Docker Engine API connection (docker, swarm).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, Protocol, cast

from ..model import SourceData


class Source(Protocol):
    """What every source module provides."""

    def fetch(self, settings: Any) -> SourceData:
        """Everything routing needs, once; SourceError when the source cannot answer."""

    def watch(self, settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
        """Block until `stop` is set, calling notify() whenever the source may have changed.
        Failures are logged and retried inside; this returns only when stopped."""


# Name (RHGEN_SOURCE) -> module. Imported on first use: a one-shot run from a file never pays
# for importing requests.
REGISTRY = {"rancher": "rancher", "docker": "docker", "swarm": "swarm", "file": "file"}
NAMES = tuple(REGISTRY)


def kind(settings: Any) -> str:
    """rancher, docker, swarm or file; DISABLE_METADATA=true keeps meaning the file source."""
    return "file" if settings.disable_metadata else settings.source


def source_for(settings: Any) -> Source:
    return cast(Source, importlib.import_module(f"{__name__}.{REGISTRY[kind(settings)]}"))


def fetch(settings: Any) -> SourceData:
    return source_for(settings).fetch(settings)


def watch(settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    source_for(settings).watch(settings, notify, stop)


def retry_delay(failures: int, first: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait after `failures` failures in a row: 0.5, 1, 2, 4 ... at most `cap`."""
    return min(first * 2 ** max(failures - 1, 0), cap)
