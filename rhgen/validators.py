"""Validators of settings: one raw value (text from env/flags, any YAML scalar from a file) -> a typed value.

Each raises ValueError with the end of a sentence ("is not a port (1-65535)"); settings.py names the
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

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off", ""}


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("is not a boolean (use true/false, yes/no or 1/0)")


class YamlNonDecimal(str):
    """The text of a YAML 1.1 integer that is not plain decimal (0x50, 0o17, 017, 1_000, 1:30).
    YAML would read `http_port: 0x50` as 80: settings are decimal, so integer parsers refuse it,
    while text settings (a password `0x50`) keep exactly what was written."""


def _decimal_text(raw: Any) -> str:
    if isinstance(raw, bool) or isinstance(raw, YamlNonDecimal):
        raise ValueError("is not a decimal whole number")
    return str(raw).strip()


def _parse_int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            raise ValueError("is not a decimal whole number")
        return raw  # from YAML, only plain decimal literals stay ints (see _non_decimal_integers)
    text = _decimal_text(raw)
    if not re.fullmatch(r"[0-9]{1,10}", text):
        raise ValueError("is not a decimal whole number")
    return int(text)


def _whole_number_between(low: int, high: int, not_a_number: str, out_of_range: str) -> Callable[[Any], int]:
    """A parser of decimal whole numbers from low to high, with the two messages it can give."""

    def parse(raw: Any) -> int:
        try:
            value = _parse_int(raw)
        except ValueError:
            raise ValueError(not_a_number) from None
        if not low <= value <= high:
            raise ValueError(out_of_range)
        return value

    return parse


parse_port = _whole_number_between(1, 65535, "is not a port (1-65535)", "is not a port (1-65535)")
parse_max_wait = _whole_number_between(
    1, 120, "is not a whole number of seconds (1-120)", "must be between 1 and 120 seconds (the metadata service's limit)"
)
parse_milliseconds = _whole_number_between(
    100, 60000, "is not a whole number of milliseconds (100-60000)", "must be between 100 and 60000 milliseconds"
)
parse_interval = _whole_number_between(
    1, 86400, "is not a whole number of seconds above 0", "must be between 1 and 86400 seconds"
)


def parse_count(raw: Any) -> int:
    value = _parse_int(raw)
    if value > 100:
        raise ValueError("is too large (at most 100)")
    return value


def parse_bytes(raw: Any) -> int:
    """A size in bytes, with an optional k/M suffix (binary: 64M is 64 MiB)."""
    text = _decimal_text(raw)
    match = re.fullmatch(r"([0-9]{1,12})\s*(?:([kKmM])i?)?[bB]?", text)
    if not match:
        raise ValueError("is not a size in bytes (e.g. 65536, 512k or 64M)")
    value = int(match.group(1)) * {None: 1, "k": 1024, "m": 1024 * 1024}[match.group(2) and match.group(2).lower()]
    if not 1024 <= value <= 4 * 1024**3:
        raise ValueError("must be at least 1k and at most 4096M")
    return value


def parse_percent(raw: Any) -> int:
    """A share in percent, 0-100, with or without a trailing %."""
    text = _decimal_text(raw).removesuffix("%").strip()
    if not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > 100:
        raise ValueError("is not a percentage (0-100)")
    return int(text)


def _parse_float(raw: Any) -> float:
    try:
        return float(str(raw).strip())
    except ValueError:
        raise ValueError("is not a number of seconds") from None


def parse_seconds(raw: Any) -> float:
    value = _parse_float(raw)
    if not 0 < value <= 3600:
        raise ValueError("must be more than 0 and at most 3600 seconds")
    return value


def parse_redirect_code(raw: Any) -> int:
    try:
        code = _parse_int(raw)
    except ValueError:
        code = 0
    if code not in (301, 302, 303, 307, 308):
        raise ValueError("is not a redirect status (301, 302, 303, 307 or 308)")
    return code


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


def parse_days(raw: Any) -> int:
    value = _parse_int(raw)
    if value > 3650:
        raise ValueError("is too large (at most 3650 days)")
    return value


def parse_hsts(raw: Any) -> int:
    value = _parse_int(raw)
    if value > 2 * 365 * 86400:
        raise ValueError("is too large (at most two years in seconds)")
    return value


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


def parse_settle(raw: Any) -> float:
    value = _parse_float(raw)
    if not 0 <= value <= 60:
        raise ValueError("must be between 0 and 60 seconds")
    return value


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


def parse_check_count(raw: Any) -> int:
    value = parse_count(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def parse_drain_timeout(raw: Any) -> float:
    value = _parse_float(raw)
    if not 0 <= value <= 300:
        raise ValueError("must be between 0 and 300 seconds")
    return value


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
