"""Quoting outside values into messages: short, and unable to drive the terminal.

Every warning, error and `rhgen routes` line can hold text from metadata (container, stack,
label, alias names). `shown()` quotes one such value, cut to SHOWN_CHARS with its total
length; `printable()` escapes control characters in a whole line, so an escape sequence in a
container name is printed as `\\x1b`, never sent to the terminal.
"""

from __future__ import annotations

import re
from typing import Any

SHOWN_CHARS = 80

# C0 and C1 controls, DEL, and the line/paragraph separators and bidi overrides a terminal or
# log viewer acts on.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """repr() of a value for a message, cut to `limit` characters of text with the total length."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = repr(value)
    if len(text) > limit + 2:
        return f"{text[:limit]}… ({len(text)} characters)"
    return text


def printable(text: str, lines: bool = False) -> str:
    """The text with every control character escaped (\\x1b, \\u2028); newlines too unless `lines`
    (haproxy -c's error lines are shown as lines)."""
    return (_CONTROL_BUT_NEWLINE if lines else _CONTROL).sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
