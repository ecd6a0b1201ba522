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
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3

from ..errors import SourceError
from ..model import SourceData
from . import retry_delay, source_data

log = logging.getLogger(__name__)

_MISSING = object()


# A long poll that comes back unchanged sooner than this means the service ignores wait=true.
MIN_POLL_SECONDS = 1.0


def base_url(host: str, version: str) -> str:
    """`host`, `host:port` or `http(s)://host:port[/path]` -> the versioned API root."""
    root = host if host.startswith(("http://", "https://")) else f"http://{host}"
    return f"{root.rstrip('/')}/{version}"


def fetch(settings: Any) -> SourceData:
    root = base_url(settings.rancher_api_host, settings.rancher_api_version)
    with _session() as session:
        containers = get_json(session, f"{root}/containers", settings)
        metadata = get_json(session, f"{root}/self/service/metadata", settings, missing=None)
    return source_data(containers, metadata, f"metadata {root}")


def _session() -> requests.Session:
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
        raise SourceError(f"version answer is not a version string ({_preview(answer.content)})")
    return str(value)


def get_json(
    session: requests.Session, url: str, settings: Any, missing: Any = _MISSING, what: str = "", **params: str
) -> Any:
    """One JSON answer, retried on refusal, timeout and 5xx; 404 gives `missing` when allowed.
    `what` names the resource in messages (default "metadata <url>")."""
    what = what or f"metadata {url}"
    attempts = settings.metadata_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _get_once(session, url, settings, missing, what, params)
        except _Transient as exc:
            if attempt == attempts:
                tries = f" after {attempts} tries" if attempts > 1 else ""
                raise SourceError(f"{what}: {exc}{tries}") from None
            log.info("%s: %s; retrying", what, exc)
            time.sleep(min(0.25 * 2 ** (attempt - 1), 2.0))
    raise AssertionError("unreachable")


class _Transient(Exception):
    """A failure worth another try."""


def _get_once(
    session: requests.Session, url: str, settings: Any, missing: Any, what: str, params: dict[str, str]
) -> Any:
    deadline = time.monotonic() + settings.metadata_read_timeout
    try:
        with session.get(
            url,
            params=params,
            timeout=(settings.metadata_connect_timeout, settings.metadata_read_timeout),
            stream=True,
            allow_redirects=False,
        ) as answer:
            if answer.status_code == 404 and missing is not _MISSING:
                return missing
            if answer.status_code >= 500:
                raise _Transient(f"HTTP {answer.status_code}")
            if answer.status_code != 200:
                raise SourceError(f"{what}: HTTP {answer.status_code}")
            body = _read_body(answer, what, deadline, settings.metadata_max_bytes)
    except requests.Timeout:
        raise _Transient("timed out") from None
    except requests.exceptions.ChunkedEncodingError:
        raise _Transient("answer cut short") from None
    except requests.ConnectionError as exc:
        raise _Transient(connection_reason(exc)) from None
    except requests.RequestException as exc:
        raise SourceError(f"{what}: {exc.__class__.__name__}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise SourceError(f"{what}: answer is not JSON ({_preview(body)})") from None
    except RecursionError:  # json raises it, not ValueError, for arrays nested a few thousand deep
        raise SourceError(f"{what}: answer is not JSON of a usable shape (nested too deeply)") from None


def _read_body(answer: requests.Response, what: str, deadline: float, cap: int) -> bytes:
    """The whole body, at most `cap` bytes (RHGEN_MAX_ANSWER_BYTES): a runaway answer is an error, not a swap file."""
    declared = answer.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise SourceError(f"{what}: answer of {int(declared)} bytes is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
    chunks, size = [], 0
    for chunk in _pieces(answer, min(cap + 1, 256 * 1024)):
        size += len(chunk)
        if size > cap:
            raise SourceError(f"{what}: answer is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
        if time.monotonic() > deadline:
            raise _Transient("answer took longer than the read timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def _pieces(answer: requests.Response, size: int) -> Iterator[bytes]:
    """The body as it arrives, so the caller checks its deadline after every network read.

    iter_content() blocks until a whole chunk is in, however slowly it trickles, which
    would let a server that sends a byte now and then hold a run far past the read timeout.
    """
    raw = answer.raw
    if not hasattr(raw, "read1"):  # older urllib3 without read1(): whole chunks only
        yield from answer.iter_content(chunk_size=size)
        return
    try:
        while chunk := raw.read1(size, decode_content=True):
            yield chunk
    except urllib3.exceptions.ReadTimeoutError as exc:  # the same exceptions iter_content raises
        raise requests.ConnectionError(exc) from None
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None


def connection_reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for needle, reason in (
        ("Name or service not known", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("Connection refused", "connection refused"),
        ("No such file or directory", "socket not found"),
        ("Permission denied", "permission denied"),
        ("Read timed out", "timed out"),
        ("IncompleteRead", "answer cut short"),
        ("Connection broken", "answer cut short"),
    ):
        if needle in text:
            return reason
    return "connection failed"


def _preview(body: bytes) -> str:
    text = body[:60].decode("utf-8", "replace").replace("\n", " ").strip()
    return f"starts with {text!r}" if text else "empty"
