"""Rancher 1.x metadata source: GET /<version>/containers and /<version>/self/service/metadata.

Watching long-polls /<version>/version?wait=true&value=<last>: the service answers as soon
as its opaque version string differs from <last>, or after maxWait seconds with the same one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import SourceError
from ..model import SourceData
from . import plain_http, retry_delay
from .answers import Answers, decode_containers, preview, source_data
from .plain_http import parse_json

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

# A long poll that comes back unchanged sooner than this means the service ignores wait=true.
MIN_POLL_SECONDS = 1.0


def base_url(host: str, version: str) -> str:
    """`host`, `host:port` or `http(s)://host:port[/path]` -> the versioned API root."""
    root = host if host.startswith(("http://", "https://")) else f"http://{host}"
    return f"{root.rstrip('/')}/{version}"


def fetch(settings: Any) -> SourceData:
    return fetch_answers(settings).decode()


def fetch_answers(settings: Any) -> Answers:
    """Both answers as read; decoding waits until the no-change shortcut has had its look. On the
    standard library's HTTP client: a one-shot run does not import requests (plain_http.py)."""
    root = base_url(settings.rancher_api_host, settings.rancher_api_version)
    containers = plain_http.get_body(settings, f"{root}/containers")
    metadata = plain_http.get_body(settings, f"{root}/self/service/metadata", missing=None)

    held = [containers, metadata]

    def decode() -> SourceData:
        # Taken out of `held`: the 6 MB of bytes go as soon as they are parsed, not after the model.
        listed = parse_json(held.pop(0), f"metadata {root}/containers", decode_containers)
        service = held.pop(0)
        service = None if service is None else parse_json(service, f"metadata {root}/self/service/metadata")
        return source_data(listed, service, f"metadata {root}")

    return Answers((containers, b"404" if metadata is None else b"200\n" + metadata), decode)


def _session() -> requests.Session:
    import requests

    session = requests.Session()
    session.headers["Accept"] = "application/json"
    session.trust_env = False  # the metadata service is local: never through an HTTP proxy
    return session


# While the service fails, /version is probed at least this often (a cheap request), so its
# recovery is noticed within a second, not after a backoff grown to half a minute.
PROBE_CAP_SECONDS = 1.0

# What a version looks like: Rancher's are "<n>-<hash>" or a number. An HTML page or a
# sentence from a proxy in front of the service is a fault, not a version.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,199}")


def watch(settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    """Long-poll the version; notify() on the first answer, on every change and on recovery."""
    import requests

    from .http import connection_reason

    url = f"{base_url(settings.rancher_api_host, settings.rancher_api_version)}/version"
    last: str | None = None
    failures = 0
    with _session() as session:
        while not stop.is_set():
            # After a failure, ask without waiting: a long poll on an unchanged version would
            # hide the recovery until the version changes or maxWait passes.
            probing = last is None or failures > 0
            params = {} if probing else {"wait": "true", "value": last, "maxWait": str(settings.watch_max_wait)}
            started = time.monotonic()
            try:
                version = _get_version(session, url, params, settings)
            except (requests.RequestException, SourceError) as exc:
                failures += 1
                delay = retry_delay(failures, cap=PROBE_CAP_SECONDS)
                reason = connection_reason(exc) if isinstance(exc, requests.ConnectionError) else str(exc)
                log.warning("watching metadata %s: %s; trying again in %.1f s", url, reason, delay)
                stop.wait(delay)
                continue
            if failures:
                log.warning("watching metadata %s: answering again", url)
                failures = 0
                if version == last:
                    notify()  # runs that failed meanwhile are retried now, not at their backoff
            if version != last:
                log.info("metadata version %s -> %s", last, version)
                last = version
                notify()
            elif not probing and time.monotonic() - started < MIN_POLL_SECONDS:
                stop.wait(MIN_POLL_SECONDS)


def _get_version(session: requests.Session, url: str, params: dict[str, str], settings: Any) -> str:
    # The read timeout covers the whole long poll: the service holds the answer up to maxWait.
    timeout = (settings.metadata_connect_timeout, settings.watch_max_wait + settings.metadata_read_timeout)
    answer = session.get(url, params=params, timeout=timeout, allow_redirects=False)
    if answer.status_code != 200:
        raise SourceError(f"HTTP {answer.status_code}")
    text = answer.text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = text  # plain-text answer (no JSON negotiated): the version itself
    if isinstance(value, bool) or not isinstance(value, str | int) or not _VERSION.fullmatch(str(value)):
        raise SourceError(f"version answer is not a version string ({preview(answer.content)})")
    return str(value)
