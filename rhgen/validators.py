"""Validators of text settings: one raw value (text from env/flags, any YAML scalar from a file) -> a typed value.

Each raises ValueError with the end of a sentence ("is not a host name"); merge.py names the
setting and where the value came from. They are what makes a value safe to write into haproxy.cfg.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable
from typing import Any

from .names import is_hostname, normalise_hostname


def parse_domain(raw: Any) -> str:
    domain = normalise_hostname(str(raw if raw is not None else ""))
    if not domain:
        raise ValueError("is required (e.g. dev.example.com)")
    if not is_hostname(domain):
        raise ValueError("is not a valid domain name")
    return domain


def parse_text(raw: Any) -> str:
    text = "" if raw is None else str(raw)
    if any(ord(ch) < 32 or ch == "\x7f" for ch in text):
        raise ValueError("contains a control character")
    return text.strip()


def _optional_matching(pattern: str, reason: str) -> Callable[[Any], str]:
    """A parser for free text that is empty or matches `pattern` whole; anything else fails with `reason`."""
    compiled = re.compile(pattern)

    def parse(raw: Any) -> str:
        text = parse_text(raw)
        if text and not compiled.fullmatch(text):
            raise ValueError(reason)
        return text

    return parse


def parse_word(raw: Any) -> str:
    """A value written into haproxy.cfg as one word: printable ASCII, no space, quote, # or %."""
    text = parse_text(raw)
    if not re.fullmatch(r"[A-Za-z0-9_.:@/+=,!*^~-]*", text):
        raise ValueError("may only hold letters, digits and _.:@/+=,!*^~- (no spaces, quotes, # or %)")
    return text


parse_label_name = _optional_matching(r"[A-Za-z0-9_./-]+", "is not a label name")


def parse_path(raw: Any) -> str:
    text = parse_text(raw)
    if text and re.search(r"[\s\"'#%\\]", text):
        raise ValueError("must not contain spaces, quotes, '#', '%' or backslashes")
    return text


def parse_required_path(raw: Any) -> str:
    text = parse_path(raw)
    if not text:
        raise ValueError("is required")
    return text


def parse_file_path(raw: Any) -> str:
    """A path rhgen writes into haproxy.cfg: made absolute, so haproxy's working folder does not matter."""
    text = parse_path(raw)
    return os.path.abspath(text) if text else ""


def parse_required_file_path(raw: Any) -> str:
    return os.path.abspath(parse_required_path(raw))


def parse_file_name(raw: Any) -> str:
    text = parse_text(raw)
    if text and (not re.fullmatch(r"[A-Za-z0-9_.@+=,-]+", text) or text.startswith(".")):
        raise ValueError("is not a plain file name")
    return text


def parse_bind_address(raw: Any) -> str:
    text = parse_text(raw)
    if text in ("", "*"):
        return ""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError("is not an IP address (leave empty to bind every address)") from None


def parse_api_version(raw: Any) -> str:
    text = parse_text(raw)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise ValueError("is not a metadata API version (e.g. latest or 2015-12-19)")
    return text


def parse_api_host(raw: Any) -> str:
    text = parse_text(raw)
    if not text or re.search(r"\s", text):
        raise ValueError("is not a host, host:port or http(s):// URL")
    return text


def parse_command(raw: Any) -> str:
    text = parse_text(raw)
    try:
        shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"is not a valid command line ({exc})") from None
    return text


def is_docker_host(text: str) -> bool:
    """unix:///path/docker.sock or tcp://host:port (plain HTTP), as the docker CLI reads DOCKER_HOST."""
    return bool(re.fullmatch(r"unix:///[^\s\"'#%\\]+", text) or re.fullmatch(r"tcp://[A-Za-z0-9_.:\[\]-]+", text))


parse_docker_network = _optional_matching(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "is not a Docker network name")


def parse_url(raw: Any) -> str:
    """Empty, or an http(s) URL without spaces or quotes (the ACME directory)."""
    text = parse_text(raw)
    if text and not re.fullmatch(r"https?://[^\s\"'<>\\]+", text):
        raise ValueError("is not an http(s):// URL (leave empty to turn ACME off)")
    return text


def parse_host_patterns(raw: Any) -> tuple[str, ...]:
    """Host names or *.suffix patterns, separated by commas or spaces; empty means every routed host."""
    if isinstance(raw, (list, tuple)):
        items = [str(item) for item in raw]
    else:
        items = re.split(r"[\s,]+", parse_text(raw))
    patterns = []
    for item in filter(None, (normalise_hostname(i) for i in items)):
        if not is_hostname(item.removeprefix("*.")):
            raise ValueError(f"holds {item!r}, which is neither a host name nor *.suffix")
        patterns.append(item)
    return tuple(patterns)


parse_syslog_host = _optional_matching(r"[A-Za-z0-9_.:\[\]-]+", "is not a host or host:port")


_FACILITIES = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "auth2", "ftp", "ntp", "audit", "alert", "cron2",
    *(f"local{i}" for i in range(8)),
}


def parse_facility(raw: Any) -> str:
    text = parse_text(raw).lower()
    if text not in _FACILITIES:
        raise ValueError("is not a syslog facility (e.g. local0)")
    return text


def parse_file_watch(raw: Any) -> str:
    text = parse_text(raw).lower()
    if text not in ("auto", "inotify", "poll"):
        raise ValueError("is not auto, inotify or poll")
    return text
