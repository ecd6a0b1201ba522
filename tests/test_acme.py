"""ACME (HTTP-01) against the real Pebble: haproxy answers the challenges itself, issued
certificates are served by SNI over real TLS handshakes, renewals go in without a reload, and an
ACME failure never touches routing.

Pebble validates by connecting to 127.0.0.1:pebble.http_port, so every test's haproxy listens
there (the tests run one after another). The master's reload counter (`show proc`) proves
whether a reload happened.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.apps import App
from tests.support.haproxy import Haproxy
from tests.support.metadata import container
from tests.support.net import free_port, unix_command
from tests.support.rhgen import rhgen_env
from tests.support.pebble import VALIDITY_DAYS


class Lab:
    """Stacks (a file source), rhgen's env for ACME against Pebble, haproxy once started."""

    def __init__(self, folder: Path, sockets: Path, pebble, **settings: str):
        self.folder, self.pebble = folder, pebble
        self.apps: dict[str, App] = {}
        self.metadata_file = folder / "metadata.json"
        self.acme_dir = folder / "acme"
        self.https_port = free_port()
        acme = {
            "ACME_DIRECTORY": pebble.directory, "ACME_CA_BUNDLE": pebble.ca_bundle, "ACME_DIR": str(self.acme_dir),
            "ACME_EMAIL": "ops@dev.tld", "ACME_RENEW_DAYS": "10", "ACME_TIMEOUT": "30",
        }
        self.env = rhgen_env(
            folder, pebble.http_port, RHGEN_SOURCE="file", METADATA_FILE=str(self.metadata_file),
            ENABLE_SSL="true", HTTPS_PORT=str(self.https_port),
            HAPROXY_STATS_SOCKET=str(sockets / "stats.sock"), **{**acme, **settings},
        )
        self.haproxy: Haproxy | None = None
        self.aliases: dict[str, list[str]] = {}

    def stack(self, name: str, ip: str, aliases: list[str] | None = None) -> None:
        self.apps[name] = App(name, ip)
        if aliases is not None:
            self.aliases[name] = aliases
        containers = [container(s, "web", app.ip, app.port, name=f"{s}-web-1") for s, app in self.apps.items()]
        self.metadata_file.write_text(
            json.dumps({"containers": containers, "self_service_metadata": {"aliases": self.aliases}}))

    def generate(self, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "rhgen", "generate", "-v"], env={**self.env, **env},
                                capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        return result

    def start_haproxy(self) -> Haproxy:
        self.haproxy = Haproxy(self.folder, self.pebble.http_port).start()
        self.env["RELOAD_COMMAND"] = self.haproxy.reload_command
        return self.haproxy

    def state(self) -> dict:
        return json.loads((self.acme_dir / "state.json").read_text())["hosts"]

    def served(self, host: str) -> x509.Certificate:
        """The certificate haproxy serves for this SNI name, verified against Pebble's root.
        A reload (a new host's certificate) is asynchronous: until the new worker has taken over,
        the old one answers with the certificates it knows, so a mismatch is retried for 10 s."""
        context = ssl.create_default_context(cadata=self.pebble.root().decode())
        deadline = time.monotonic() + 10
        while True:
            try:
                return self._handshake(context, host)
            except (ssl.SSLCertVerificationError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _handshake(self, context: ssl.SSLContext, host: str) -> x509.Certificate:
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
                return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))

    def close(self) -> None:
        if self.haproxy:
            self.haproxy.close()
        for app in self.apps.values():
            app.close()


@pytest.fixture
def lab(tmp_path, pebble, socket_dir):
    sockets = Path(socket_dir)
    labs: list[Lab] = []

    def make(**settings: str) -> Lab:
        labs.append(Lab(tmp_path, sockets, pebble, **settings))
        return labs[-1]

    yield make
    for made in labs:
        made.close()


def http_get(port: int, host: str, path: str) -> tuple[int, dict[str, str], str]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


# --- 1. challenges answered by haproxy ----------------------------------------------------------


def test_unknown_challenge_token_is_404_and_the_challenge_path_is_never_redirected(lab):
    setup = lab(ENABLE_SSL_REDIRECTION="true")
    setup.stack("app1", "127.0.0.11")
    setup.generate()
    haproxy = setup.start_haproxy()
    status, headers, body = http_get(haproxy.port, "app1.dev.tld", "/.well-known/acme-challenge/no-such-token")
    assert (status, body) == (404, "unknown ACME challenge token")
    assert "location" not in {k.lower() for k in headers}
    # Everything else on HTTP still goes to HTTPS once there is a certificate.
    assert (setup.acme_dir / "challenges.map").read_text() == ""


def test_a_pending_challenge_is_answered_through_the_runtime_api_without_a_reload(lab):
    """What Pebble sees during an order, observed directly: rhgen's map entry, live, no reload."""
    setup = lab()
    setup.stack("app1", "127.0.0.11")
    setup.generate()
    haproxy = setup.start_haproxy()
    reloads = haproxy.reloads
    map_path = setup.acme_dir / "challenges.map"
    answer = unix_command(setup.env["HAPROXY_STATS_SOCKET"], f"add map {map_path} /.well-known/acme-challenge/tok-1 tok-1.thumb")
    assert answer.strip() == ""
    assert http_get(haproxy.port, "app1.dev.tld", "/.well-known/acme-challenge/tok-1")[::2] == (200, "tok-1.thumb")
    assert http_get(haproxy.port, "app1.dev.tld", "/.well-known/acme-challenge/tok-2")[0] == 404
    assert haproxy.reloads == reloads


# --- 2. issuing ------------------------------------------------------------------------------------


def test_routed_host_gets_a_certificate_from_pebble_served_by_sni(lab, pebble):
    setup = lab()
    setup.stack("app1", "127.0.0.11")
    first = setup.generate()  # haproxy is not running yet: no order, no backoff
    assert "ACME waits for the next run" in first.stderr
    assert not (setup.acme_dir / "state.json").exists()
    setup.start_haproxy()

    setup.generate()
    cert = setup.served("app1.dev.tld")  # verified against Pebble's root, the host name checked
    assert "Pebble" in cert.issuer.rfc4514_string()
    pem = setup.acme_dir / "certs" / "app1.dev.tld.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE((setup.acme_dir / "account.key").stat().st_mode) == 0o600
    assert str(pem) in (setup.folder / "crt-list.txt").read_text()

    # A second stack gets its own certificate; the first keeps serving its own.
    setup.stack("app2", "127.0.0.12")
    setup.generate()
    assert setup.served("app2.dev.tld").serial_number != setup.served("app1.dev.tld").serial_number
    assert setup.served("app1.dev.tld").serial_number == cert.serial_number
    # Nothing more to do: the next run places no order.
    assert "issued" not in setup.generate().stderr


def test_keys_are_never_logged(lab):
    setup = lab()
    setup.stack("app1", "127.0.0.11")
    setup.generate()
    setup.start_haproxy()
    result = setup.generate()
    logged = result.stdout + result.stderr
    assert "issued" in logged
    assert "PRIVATE KEY" not in logged
    assert "PRIVATE KEY" not in (setup.acme_dir / "state.json").read_text()


def test_user_certificate_wins_and_hosts_outside_acme_hosts_get_no_order(lab, tmp_path):
    import trustme

    ca = trustme.CA()
    own = tmp_path / "own"
    own.mkdir()
    ca.issue_cert("app1.dev.tld").private_key_and_cert_chain_pem.write_to_path(str(own / "app1.pem"))
    setup = lab(HAPROXY_SSL_CERT_DIR=str(own), ACME_HOSTS="app2.dev.tld,*.acme.dev.tld")
    for name, ip in (("app1", "127.0.0.11"), ("app2", "127.0.0.12"), ("app3", "127.0.0.13")):
        setup.stack(name, ip)
    setup.generate()
    setup.start_haproxy()
    setup.generate()
    issued = sorted(os.listdir(setup.acme_dir / "certs"))
    assert issued == ["app2.dev.tld.pem"]  # app1 is the user's, app3 is outside ACME_HOSTS
    assert setup.served("app2.dev.tld").issuer.rfc4514_string().count("Pebble")


def test_wildcard_hosts_get_no_order_since_http_01_cannot_validate_them(lab):
    setup = lab()
    setup.stack("app1", "127.0.0.11", aliases=["*.app1"])
    setup.generate()
    setup.start_haproxy()
    result = setup.generate()
    assert sorted(os.listdir(setup.acme_dir / "certs")) == ["app1.dev.tld.pem"]
    assert "ACME *.app1.dev.tld" not in result.stderr  # no order, no failure, no backoff
    assert not (setup.acme_dir / "state.json").exists() or setup.state() == {}


# --- 3. bounds and failures ----------------------------------------------------------------------


def test_acme_max_orders_holds_per_run(lab):
    setup = lab(ACME_MAX_ORDERS="1")
    for name, ip in (("app1", "127.0.0.11"), ("app2", "127.0.0.12"), ("app3", "127.0.0.13")):
        setup.stack(name, ip)
    setup.generate()
    setup.start_haproxy()
    result = setup.generate()
    assert "3 hosts due, ACME_MAX_ORDERS is 1" in result.stderr
    assert len(os.listdir(setup.acme_dir / "certs")) == 1
    setup.generate()
    assert len(os.listdir(setup.acme_dir / "certs")) == 2


def test_pebble_down_leaves_routing_alone_records_backoff_and_a_later_run_retries(lab, pebble, reliability):
    setup = lab()
    setup.stack("app1", "127.0.0.11")
    setup.generate()
    haproxy = setup.start_haproxy()
    pebble.stop()
    try:
        before = time.time()
        result = setup.generate()  # exit 0 asserted inside
        assert "routing unaffected" in result.stderr
        assert haproxy.get("app1.dev.tld") == (200, "app1")
        state = setup.state()["app1.dev.tld"]
        assert state["failures"] == 1
        assert before + 250 < state["next_try"] < time.time() + 350  # wall clock, 5 minutes on
        assert "ACME directory" in state["error"]

        again = setup.generate()  # within the backoff: no new try
        assert "retry after" in again.stderr
        assert setup.state()["app1.dev.tld"]["failures"] == 1
    finally:
        pebble.start()
    # Time passes (the state holds wall-clock times, so we move it back): the next run retries.
    path = setup.acme_dir / "state.json"
    data = json.loads(path.read_text())
    data["hosts"]["app1.dev.tld"]["next_try"] = time.time() - 1
    path.write_text(json.dumps(data))
    setup.generate()
    assert setup.state() == {}
    assert setup.served("app1.dev.tld")
    reliability("Faults of the machine", "the ACME server (Pebble) is down during a run", held="routing kept, backoff recorded, retried later")


def test_backoff_doubles_with_each_failure():
    from rhgen.acme_state import BACKOFF_MAX, backoff

    assert [backoff(n) for n in (1, 2, 3)] == [300, 600, 1200]
    assert backoff(30) == BACKOFF_MAX


# --- 4. renewal ------------------------------------------------------------------------------------


def test_renewal_replaces_the_served_certificate_without_a_reload(lab):
    setup = lab()
    setup.stack("app1", "127.0.0.11")
    setup.generate()
    haproxy = setup.start_haproxy()
    setup.generate()
    first = setup.served("app1.dev.tld")
    reloads = haproxy.reloads

    # ACME_RENEW_DAYS above the remaining validity: renew now.
    result = setup.generate(ACME_RENEW_DAYS=str(VALIDITY_DAYS + 10))
    assert "renewed through the runtime API, no reload" in result.stderr
    renewed = setup.served("app1.dev.tld")
    assert renewed.serial_number != first.serial_number
    assert haproxy.reloads == reloads
    setup.generate()  # the next ordinary run changes nothing and reloads nothing
    assert haproxy.reloads == reloads
    assert setup.served("app1.dev.tld").serial_number == renewed.serial_number


def test_acme_server_refusing_is_a_warning_with_backoff_and_routing_exits_0(lab, pebble):
    setup = lab()
    setup.stack("app1", "127.0.0.11")
    setup.generate()
    haproxy = setup.start_haproxy()
    result = setup.generate(ACME_DIRECTORY=pebble.directory.replace("/dir", "/no-such-directory"))
    assert "rhgen: warning: ACME app1.dev.tld (new certificate): ACME directory" in result.stderr
    assert haproxy.get("app1.dev.tld") == (200, "app1")
    assert setup.state()["app1.dev.tld"]["failures"] == 1


def test_an_acme_server_that_never_answers_is_bounded_by_acme_timeout(lab, metadata_server, reliability):
    metadata_server.answer("/dir", hang=True)  # accepts the connection, never answers
    setup = lab(ACME_DIRECTORY=f"http://{metadata_server.host}/dir", ACME_TIMEOUT="2")
    setup.stack("app1", "127.0.0.11")
    setup.generate()
    haproxy = setup.start_haproxy()
    started = time.monotonic()
    result = setup.generate()
    took = time.monotonic() - started
    assert took < 8, took
    assert "routing unaffected" in result.stderr
    assert haproxy.get("app1.dev.tld") == (200, "app1")
    assert setup.state()["app1.dev.tld"]["failures"] == 1
    reliability("Faults of the machine", "the ACME server accepts and never answers",
                held=f"run bounded by ACME_TIMEOUT=2 ({took:.1f} s), exit 0, backoff recorded")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ACME_HOSTS": "app1.dev.tld,*.*.bad"}, "setting ACME_HOSTS (environment): 'app1.dev.tld,*.*.bad' holds '*.*.bad'"),
        ({"ACME_DIRECTORY": "ftp://x"}, "is not an http(s):// URL"),
        ({"ENABLE_SSL": "false"}, "setting ACME_DIRECTORY needs ENABLE_SSL=true"),
        ({"ACME_MAX_ORDERS": "many"}, "setting ACME_MAX_ORDERS (environment): 'many' is not a decimal whole number"),
    ],
    ids=["hosts", "directory", "no-ssl", "max-orders"],
)
def test_invalid_acme_settings_exit_2_naming_the_setting(env, expected, run_rhgen, tmp_path):
    base = rhgen_env(tmp_path, 8080, ENABLE_SSL="true", ACME_DIRECTORY="https://127.0.0.1:1/dir",
                     ACME_DIR=str(tmp_path / "acme"), RHGEN_SOURCE="file", METADATA_FILE=str(tmp_path / "m.json"))
    result = run_rhgen(["generate"], {**base, **env})
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_rhgen_certs_shows_per_host_certificate_issuer_expiry_and_acme_state(lab, pebble, run_rhgen):
    setup = lab(ACME_MAX_ORDERS="1")
    setup.stack("app1", "127.0.0.11")
    setup.stack("app2", "127.0.0.12")
    setup.generate()
    setup.start_haproxy()
    setup.generate()  # one order this run: app1 (hosts are ordered by name)
    shown = run_rhgen(["certs"], setup.env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    app1 = lines[lines.index(next(line for line in lines if line.startswith("app1.dev.tld"))) + 1]
    assert str(setup.acme_dir / "certs" / "app1.dev.tld.pem") in shown.stdout
    assert "issuer CN=Pebble Intermediate CA" in shown.stdout
    assert "ACME: valid until" in app1
    assert "app2.dev.tld  no certificate names it" in shown.stdout
    assert "ACME: pending: ordered at the next run" in shown.stdout

    pebble.stop()
    try:
        setup.generate()
    finally:
        pebble.start()
    rows = {row["host"]: row for row in json.loads(run_rhgen(["certs", "--json"], setup.env).stdout)}
    assert rows["app2.dev.tld"]["acme"].startswith("next retry ")
    assert rows["app1.dev.tld"]["covers"] is True


def test_dry_run_with_acme_checks_the_config_and_places_no_order(lab):
    setup = lab()
    setup.stack("app1", "127.0.0.11")
    result = subprocess.run([sys.executable, "-m", "rhgen", "generate", "--dry-run"], env=setup.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "acme-challenge" in result.stdout  # the diff shows the challenge answer
    assert not (setup.folder / "haproxy.cfg").exists()
    assert sorted(os.listdir(setup.acme_dir)) == ["certs", "challenges.map"]
    assert os.listdir(setup.acme_dir / "certs") == []


def test_a_second_run_while_one_holds_acme_dir_places_no_order_and_exits_0(lab):
    import fcntl

    setup = lab(ACME_TIMEOUT="1")
    setup.stack("app1", "127.0.0.11")
    setup.generate()
    haproxy = setup.start_haproxy()
    with open(setup.acme_dir / ".rhgen.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = setup.generate()
    assert "orders wait for the next run" in result.stderr
    assert os.listdir(setup.acme_dir / "certs") == []
    assert haproxy.get("app1.dev.tld") == (200, "app1")
    setup.generate(ACME_TIMEOUT="30")
    assert os.listdir(setup.acme_dir / "certs") == ["app1.dev.tld.pem"]
