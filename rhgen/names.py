"""Validation of names that come from outside: DNS labels, host names, HAProxy identifiers.

Everything here is pure and strict on purpose: whatever passes can be written into
haproxy.cfg or a map file without quoting, because it cannot hold a space, a newline,
a `#`, a quote or a `%`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_IDENTIFIER_CHAR = re.compile(r"[^A-Za-z0-9_.:-]")
MAX_HOSTNAME = 253
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def is_dns_label(text: str) -> bool:
    """True for one lower-case DNS label: 1-63 of [a-z0-9-], no dash at either end."""
    return bool(_LABEL.match(text))


def is_hostname(text: str) -> bool:
    """True for a lower-case host name made of DNS labels (no trailing dot, no wildcard)."""
    if not text or len(text) > MAX_HOSTNAME or not text.isascii():
        return False
    return all(is_dns_label(label) for label in text.split("."))


def dns_lower(text: str) -> str:
    """Lower-case A-Z only, as DNS (RFC 4343) and haproxy's `lower` do. str.lower() would also
    turn the Kelvin sign into "k": a stack named "\u212aube" would take over kube.<domain>."""
    return text.translate(_ASCII_LOWER)


def normalise_hostname(text: str) -> str:
    """Lower-case a host name and drop one trailing dot; callers validate the result."""
    text = dns_lower(text.strip())
    return text[:-1] if text.endswith(".") else text


def identifier(text: str) -> str:
    """Make text a valid HAProxy identifier by replacing every other character with '_'."""
    return _IDENTIFIER_CHAR.sub("_", text) or "_"


def covers(names: Iterable[str], host: str) -> bool:
    """True when one of a certificate's names (or an ACME_HOSTS pattern) covers `host`: the same
    name, or `*.<rest>` where the wildcard stands for exactly one label, as TLS clients match."""
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False
