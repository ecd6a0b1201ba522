"""Reading what rhgen said and wrote, and the small files tests put next to it: its error and
warning lines, the map and server lines of the generated files, a stub executable, and a
haproxy.cfg as users of the seed image wrote their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("rhgen: error:")]


def warning_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("rhgen: warning:")]


def map_entries(target: Any) -> dict[str, str]:
    lines = [line.split() for line in target.map.read_text().splitlines() if line and not line.startswith("#")]
    return {host: backend for host, backend in lines}


def server_lines(target: Any) -> list[str]:
    return [line.strip() for line in target.backends.read_text().splitlines() if line.strip().startswith("server ")]


def script(path: Path, body: str) -> Path:
    """An executable /bin/sh script (a recording or failing stand-in for haproxy, a reload command)."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def seed_style_config(target: Any, use_map: bool = True, fallback: bool = True) -> bytes:
    """A haproxy.cfg as users of the image rhgen replaces wrote their own: the map by its live
    path, a fallback backend, no rhgen header."""
    lookup = f"use_backend %[req.hdr(host),lower,map({target.map},fallback)]\n" if use_map else ""
    return (
        "global\n    log stdout format raw local0\n\n"
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n"
        f"frontend http\n    bind 127.0.0.1:{target.port}\n    {lookup}    default_backend fallback\n\n"
        + ("backend fallback\n    http-request return status 503 content-type text/plain string nobody-here\n" if fallback else "")
    ).encode()


def chain_pem(cert: Any) -> str:
    """A trustme certificate's chain as PEM text."""
    return "".join(blob.bytes().decode() for blob in cert.cert_chain_pems)


def key_pem(cert: Any) -> str:
    return cert.private_key_pem.bytes().decode()
