"""The sidekick layout: `entrypoint.sh generate-maps` writes into a shared folder, a second
entrypoint with RHGEN_MODE=haproxy-only runs haproxy and reloads when any generated file changes."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from tests.support.apps import App
from tests.support.haproxy import current_worker, master_reloads
from tests.support.metadata import container, MetadataServer, write_metadata_file
from tests.support.net import closing_all, free_port, get, routes_to, wait_for
from tests.support.rhgen import ENTRYPOINT, entrypoint_env

# One period of the sidekick's schedule, its run, the watcher's settling time, the reload, margin.
FOLLOW = 1.0 + 4.0


def test_sidekick_writes_and_the_haproxy_container_follows_every_kind_of_change(procs, tmp_path, socket_dir):
    shared = tmp_path / "shared"  # the volume both containers mount
    shared.mkdir()
    ports = {"app1": free_port("127.0.0.11"), "app2": free_port("127.0.0.21")}
    metadata = MetadataServer(containers=[container("app1", "web", "127.0.0.11", ports["app1"], name="app1-web-1")])
    http_port = free_port()
    env = entrypoint_env(shared, socket_dir, http_port, RANCHER_API_HOST=metadata.host)

    with closing_all(
        App("app1\n", "127.0.0.11", ports["app1"]),
        App("app2\n", "127.0.0.21", ports["app2"]),
        metadata,
    ):
        haproxy_side = procs.spawn(["bash", str(ENTRYPOINT)], {**env, "RHGEN_MODE": "haproxy-only"}, "haproxy")
        # Without files in the shared folder it waits, and runs no haproxy.
        wait_for(lambda: "no configuration yet" in haproxy_side.log(), 5, what="haproxy side waiting")
        assert not [p for p in procs.leftovers() if "haproxy -W" in p]

        sidekick = procs.spawn(["bash", str(ENTRYPOINT), "generate-maps"], env, "sidekick")
        wait_for(routes_to(http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed")
        socket = env["HAPROXY_MASTER_SOCKET"]
        wait_for(lambda: "with inotify" in haproxy_side.log(), 5, what="watching with inotifywait")

        # New stack.
        metadata.containers.append(container("app2", "web", "127.0.0.21", ports["app2"], name="app2-web-1"))
        wait_for(routes_to(http_port, "app2.dev.tld", "app2\n"), FOLLOW, what="new stack routed")

        # Alias only: domain.map alone changes.
        backends_before = Path(env["HAPROXY_BACKEND_CONFIG"]).read_bytes()
        metadata.service_metadata = {"aliases": {"app1": ["www"]}}
        wait_for(routes_to(http_port, "www.dev.tld", "app1\n"), FOLLOW, what="alias-only change routed")
        assert Path(env["HAPROXY_BACKEND_CONFIG"]).read_bytes() == backends_before

        # Certificate only: the PEM at HAPROXY_SSL_CERT changes (as a renewed certificate would),
        # nothing else does; haproxy must still load it.
        reloads, _ = master_reloads(socket)
        worker = current_worker(socket)
        write_certificate(Path(env["HAPROXY_SSL_CERT"]))
        wait_for(lambda: master_reloads(socket)[0] > reloads, FOLLOW, what="reload after a certificate change")
        wait_for(lambda: current_worker(socket) != worker, 5, what="a new worker")
        assert get(http_port, "app1.dev.tld") == (200, "app1\n")

        # Both stop cleanly, each with status 0.
        assert sidekick.terminate_and_wait() == 0
        assert haproxy_side.terminate_and_wait() == 0
        assert procs.leftovers() == []


def write_certificate(path: Path) -> None:
    pem = trustme.CA().issue_cert("*.dev.tld").private_key_and_cert_chain_pem.bytes()
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(pem)
    temp.replace(path)


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_haproxy_container_reloads_on_a_changed_file_and_keeps_serving_through_a_broken_one(
    procs, tmp_path, socket_dir, watch
):
    backend_port, http_port = free_port("127.0.0.11"), free_port()
    metadata_file = tmp_path / "metadata.json"
    write_metadata_file(metadata_file, [container("app1", "web", "127.0.0.11", backend_port, name="app1-web-1")])
    env = entrypoint_env(tmp_path, socket_dir, http_port, DISABLE_METADATA="true", METADATA_FILE=str(metadata_file))
    # What a sidekick would have written into the shared folder.
    subprocess.run(["rhgen", "generate"], env=env, check=True, capture_output=True, timeout=30)

    with closing_all(App("app1\n", "127.0.0.11", backend_port)):
        proc = procs.spawn(
            ["bash", str(ENTRYPOINT)],
            {**env, "RHGEN_MODE": "haproxy-only", "RHGEN_WATCH": watch, "RHGEN_POLL_INTERVAL": "0.5"},
            "haproxy",
        )
        wait_for(routes_to(http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed")
        said = "with inotify" if watch == "inotify" else "polling the generated files every 0.5 s"
        wait_for(lambda: said in proc.log(), 5, what="watching")
        socket = env["HAPROXY_MASTER_SOCKET"]

        # A certificate appears where HAPROXY_SSL_CERT points.
        reloads, _ = master_reloads(socket)
        write_certificate(Path(env["HAPROXY_SSL_CERT"]))
        wait_for(lambda: master_reloads(socket)[0] == reloads + 1, 5, what="reload after the certificate")

        # A broken backends file (hand-edited, say): haproxy -c refuses it, nothing reloads,
        # the running worker keeps serving.
        backends = Path(env["HAPROXY_BACKEND_CONFIG"])
        good = backends.read_bytes()
        worker = current_worker(socket)
        backends.write_bytes(good + b"\nbackend broken\n    no-such-keyword\n")
        wait_for(lambda: "the reload failed: haproxy keeps serving" in proc.log(), 5, what="refusal logged")
        assert "no-such-keyword" in proc.log()
        assert current_worker(socket) == worker
        assert master_reloads(socket)[0] == reloads + 1
        assert get(http_port, "app1.dev.tld") == (200, "app1\n")

        backends.write_bytes(good)
        wait_for(lambda: master_reloads(socket)[0] == reloads + 2, 5, what="reload once the file is good again")
        assert get(http_port, "app1.dev.tld") == (200, "app1\n")
        assert proc.terminate_and_wait() == 0
        assert procs.leftovers() == []


def served_serial(port: int, ca: trustme.CA, host: str) -> int | None:
    """The serial number of the certificate haproxy serves for host (None while nothing answers)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    try:
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3), server_hostname=host) as sock:
            return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number
    except OSError:
        return None


def test_a_renewed_certificate_in_the_folder_is_served_in_the_sidekick_layout(procs, tmp_path, socket_dir):
    # A renewal in HAPROXY_SSL_CERT_DIR changes only crt-list.txt among the files rhgen writes;
    # the haproxy container follows .rhgen.generation, which rhgen rewrites after every swap.
    shared, certs = tmp_path / "shared", tmp_path / "certs"
    shared.mkdir()
    certs.mkdir()
    ca = trustme.CA()

    def issue() -> int:
        leaf = ca.issue_cert("app1.dev.tld")
        temp = certs / "app1.pem.new"
        temp.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
        temp.replace(certs / "app1.pem")
        return x509_serial(leaf)

    port = free_port("127.0.0.11")
    metadata_port, http_port, https_port = free_port(), free_port(), free_port()
    env = entrypoint_env(
        shared, socket_dir, http_port, RANCHER_API_HOST=f"127.0.0.1:{metadata_port}",
        ENABLE_SSL="true", HTTPS_PORT=str(https_port), HAPROXY_SSL_CERT_DIR=str(certs),
        HAPROXY_SSL_DEFAULT_CERT="app1.pem", HAPROXY_SSL_CRT_LIST=str(shared / "crt-list.txt"),
    )
    first = issue()
    with closing_all(
        App("app1\n", "127.0.0.11", port),
        MetadataServer(port=metadata_port, containers=[container("app1", "web", "127.0.0.11", port, name="app1-web-1")]),
    ):
        procs.spawn(["bash", str(ENTRYPOINT), "generate-maps"], env, "sidekick")
        haproxy_side = procs.spawn(["bash", str(ENTRYPOINT)], {**env, "RHGEN_MODE": "haproxy-only"}, "haproxy")
        wait_for(lambda: served_serial(https_port, ca, "app1.dev.tld") == first, 15, what="first certificate served")
        wait_for(lambda: "with inotify" in haproxy_side.log(), 5, what="watching with inotifywait")

        renewed = issue()
        wait_for(lambda: served_serial(https_port, ca, "app1.dev.tld") == renewed, FOLLOW, what="renewed certificate served")
        assert (shared / ".rhgen.generation").is_file()
        assert haproxy_side.terminate_and_wait() == 0


def x509_serial(leaf) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
