"""The rhgen commands the entrypoint runs, on a real haproxy: `rhgen run-haproxy` (haproxy's
command line from the settings), `rhgen check`, `rhgen reload` through the master CLI, and the
paths of an RHGEN_CONFIG file reaching haproxy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.support.apps import App
from tests.support.haproxy import current_worker, master_reloads
from tests.support.metadata import container, write_metadata_file
from tests.support.net import closing_all, free_port, routes_to, wait_for
from tests.support.rhgen import ENTRYPOINT, RELOAD_HELPER, entrypoint_env

BROKEN = b"\nbackend broken\n    no-such-keyword\n"


@pytest.fixture
def env(tmp_path, socket_dir):
    """A file source routing app1 to a real backend, and the files `rhgen generate` made of it."""
    backend_port = free_port("127.0.0.11")
    metadata_file = tmp_path / "metadata.json"
    write_metadata_file(metadata_file, [container("app1", "web", "127.0.0.11", backend_port, name="app1-web-1")])
    environment = entrypoint_env(tmp_path, socket_dir, free_port(), DISABLE_METADATA="true", METADATA_FILE=str(metadata_file))
    rhgen(["generate"], environment, check=True)
    with closing_all(App("app1\n", "127.0.0.11", backend_port)):
        yield environment


def rhgen(args, env, check=False):
    return subprocess.run(["rhgen", *args], env=env, capture_output=True, text=True, timeout=60, check=check)


def start_haproxy(procs, env):
    proc = procs.spawn(["rhgen", "run-haproxy"], env, "haproxy")
    wait_for(routes_to(int(env["HTTP_PORT"]), "app1.dev.tld", "app1\n"), 15, what="haproxy serving app1")
    return proc


def test_check_accepts_the_live_files_and_names_haproxys_complaint_about_broken_ones(env):
    assert rhgen(["check"], env).returncode == 0
    # the haproxy container of the sidekick layout renders nothing: it needs no STACK_DOMAIN
    assert rhgen(["check"], {k: v for k, v in env.items() if k != "STACK_DOMAIN"}).returncode == 0
    backends = Path(env["HAPROXY_BACKEND_CONFIG"])
    backends.write_bytes(backends.read_bytes() + BROKEN)
    result = rhgen(["check"], env)
    assert result.returncode == 1
    assert f"haproxy -c rejected {env['HAPROXY_CONFIG']}" in result.stderr
    assert "no-such-keyword" in result.stderr
    backends.unlink()
    result = rhgen(["check"], env)
    assert result.returncode == 1 and f"no configuration yet ({backends})" in result.stderr


def test_reload_starts_a_new_worker_and_refuses_a_set_haproxy_rejects(procs, env):
    start_haproxy(procs, env)
    socket = env["HAPROXY_MASTER_SOCKET"]
    reloads, _ = master_reloads(socket)
    worker = current_worker(socket)
    result = rhgen(["reload"], env)
    assert result.returncode == 0, result.stderr
    assert master_reloads(socket) == (reloads + 1, 0)  # done when rhgen reload returns, not later
    assert current_worker(socket) != worker

    backends = Path(env["HAPROXY_BACKEND_CONFIG"])
    backends.write_bytes(backends.read_bytes() + BROKEN)
    worker = current_worker(socket)
    for command in (["rhgen", "reload"], [str(RELOAD_HELPER)]):  # the former name still works
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "no-such-keyword" in result.stderr
    assert master_reloads(socket)[0] == reloads + 1 and current_worker(socket) == worker
    assert routes_to(int(env["HTTP_PORT"]), "app1.dev.tld", "app1\n")()


def test_reload_without_a_master_fails_naming_the_socket(env):
    result = rhgen(["reload"], {**env, "RHGEN_RELOAD_TIMEOUT": "1"})
    assert result.returncode == 1
    assert f"no haproxy master answers on {env['HAPROXY_MASTER_SOCKET']} (HAPROXY_MASTER_SOCKET)" in result.stderr


def test_paths_set_in_an_rhgen_config_file_reach_haproxy_and_the_reload(procs, env, tmp_path):
    # Before: the shell re-read the environment with its own defaults, so haproxy never saw them.
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    config = tmp_path / "rhgen.yml"
    config.write_text(
        f"haproxy_config: {folder}/haproxy.cfg\nhaproxy_backend_config: {folder}/backends.cfg\n"
        f"haproxy_domain_map: {folder}/domain.map\nhaproxy_ssl_cert: {folder}/haproxy.pem\n"
        f"haproxy_master_socket: {env['HAPROXY_MASTER_SOCKET']}.cfg\n"
    )
    file_env = {k: v for k, v in env.items() if not k.startswith("HAPROXY_")}
    file_env["RHGEN_CONFIG"] = str(config)
    proc = procs.spawn(["bash", str(ENTRYPOINT)], file_env, "entrypoint")
    wait_for(routes_to(int(env["HTTP_PORT"]), "app1.dev.tld", "app1\n"), 15, what="served from the file's paths")
    assert (folder / "backends.cfg").is_file()
    wait_for(lambda: "in a plain loop" in proc.log(), 10, what="the schedule running")
    assert rhgen(["reload"], file_env).returncode == 0
    assert master_reloads(env["HAPROXY_MASTER_SOCKET"] + ".cfg")[0] >= 1
    assert proc.terminate_and_wait() == 0


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_watch_files_reloads_for_a_change_made_before_it_started(procs, env, watch):
    # haproxy starts first, the watcher beside it; a file that changed in between must not be missed.
    start_haproxy(procs, env)
    socket = env["HAPROXY_MASTER_SOCKET"]
    domain_map = Path(env["HAPROXY_DOMAIN_MAP"])
    domain_map.write_bytes(domain_map.read_bytes() + b"late.dev.tld app1\n")
    watcher = procs.spawn(["rhgen", "watch-files"], {**env, "RHGEN_WATCH": watch, "RHGEN_POLL_INTERVAL": "0.5"}, "watcher")
    wait_for(lambda: master_reloads(socket)[0] == 1, 10, what="the reload for the earlier change")
    assert routes_to(int(env["HTTP_PORT"]), "late.dev.tld", "app1\n")()
    # the master counts the reload a moment before it reports the outcome the watcher waits for
    wait_for(lambda: "files changed: haproxy reloaded" in watcher.log(), 10, what="the reload logged")
    assert watcher.terminate_and_wait() == 0
    assert master_reloads(socket)[0] == 1
