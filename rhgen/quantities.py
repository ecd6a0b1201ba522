"""Validators of numeric settings: booleans, decimal whole numbers in a range, sizes, percentages
and seconds. Like validators.py, each raises ValueError with the end of a sentence. Settings are
decimal: YAML 1.1's other integer spellings (0x50, 017, 1_000, 1:30) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any


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


def parse_settle(raw: Any) -> float:
    value = _parse_float(raw)
    if not 0 <= value <= 60:
        raise ValueError("must be between 0 and 60 seconds")
    return value


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
