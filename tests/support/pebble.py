"""Let's Encrypt's test ACME server, the real one Debian ships (`apt-get install pebble`).

`pebble-challtestsrv` answers every DNS A query with 127.0.0.1 (and no AAAA), so Pebble's HTTP-01
validation connects to 127.0.0.1:<http_port>, where the test's haproxy listens. Pebble's own TLS
certificate is made here with trustme (the package's example config names files it does not
ship); rhgen trusts it through ACME_CA_BUNDLE. Validation is real (no PEBBLE_VA_ALWAYS_VALID),
without Pebble's random sleeps, and without its deliberate nonce rejections.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import trustme

VALIDITY_DAYS = 50  # of issued certificates (Pebble's certificateValidityPeriod)


class PebbleUnavailable(Exception):
    """pebble is not installed: a skip on a developer's machine, a failure in CI."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pebble:
    def __init__(self, folder: Path, http_port: int):
        for tool in ("pebble", "pebble-challtestsrv"):
            if not shutil.which(tool):
                raise PebbleUnavailable(f"{tool} is not installed (apt-get install pebble)")
        self.folder = folder
        self.http_port = http_port  # where Pebble validates HTTP-01: the tests' haproxy must listen here
        self.acme_port, self.management_port, self.dns_port = _free_port(), _free_port(), _free_port()
        self.directory = f"https://127.0.0.1:{self.acme_port}/dir"
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(folder / "pebble-tls-ca.pem"))
        self.ca_bundle = str(folder / "pebble-tls-ca.pem")
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        leaf.cert_chain_pems[0].write_to_path(str(folder / "pebble-cert.pem"))
        leaf.private_key_pem.write_to_path(str(folder / "pebble-key.pem"))
        self._ssl = ssl.create_default_context(cafile=self.ca_bundle)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.acme_port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(folder / "pebble-cert.pem"),
                "privateKey": str(folder / "pebble-key.pem"),
                "httpPort": http_port,
                "tlsPort": _free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": VALIDITY_DAYS * 86400,
            }
        }
        (folder / "pebble-config.json").write_text(json.dumps(config))
        self.processes: list[subprocess.Popen] = []
        self.log = folder / "pebble.log"
        self.start()

    def start(self) -> None:
        """Start (or restart, after stop()) both daemons and wait until the directory answers."""
        with open(self.log, "ab") as log:
            self.processes = [
                subprocess.Popen(  # noqa: S603
                    ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                     "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                     "-management", f"127.0.0.1:{_free_port()}"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                ),
                subprocess.Popen(  # noqa: S603
                    ["pebble", "-config", str(self.folder / "pebble-config.json"),
                     "-dnsserver", f"127.0.0.1:{self.dns_port}", "-strict=false"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"},
                ),
            ]
        deadline = time.monotonic() + 20
        while True:
            for process in self.processes:
                if process.poll() is not None:
                    self.stop()
                    raise AssertionError(f"{process.args[0]} exited {process.returncode}:\n{self.log.read_text()}")
            try:
                self.fetch(self.directory)
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"pebble did not answer within 20 s:\n{self.log.read_text()}") from None
                time.sleep(0.1)

    def fetch(self, url: str) -> bytes:
        with urllib.request.urlopen(url, context=self._ssl, timeout=5) as answer:  # noqa: S310 - https on 127.0.0.1
            return answer.read()

    def root(self) -> bytes:
        """Pebble's issuing root (made afresh at each start), from its management port."""
        return self.fetch(f"https://127.0.0.1:{self.management_port}/roots/0")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes = []
