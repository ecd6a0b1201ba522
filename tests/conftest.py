"""Fixtures over the real components in helpers.py: metadata server, backend servers, rhgen, haproxy."""

from __future__ import annotations

import pytest

from helpers import BackendServers, Haproxy, MetadataServer, make_target, run_rhgen as run, start_demo


@pytest.fixture
def metadata_server():
    """A real HTTP metadata service on 127.0.0.1:<free port>; answers per path are set by the test."""
    server = MetadataServer()
    yield server
    server.close()


@pytest.fixture
def backend_servers():
    """backend_servers.start(ip, name, proxy_protocol=False) -> a running HTTP server answering its name."""
    servers = BackendServers()
    yield servers
    servers.close()


@pytest.fixture
def demo(metadata_server, backend_servers):
    """The demo environment (demo/metadata.json in small dicts) on the metadata server, backends running."""
    return start_demo(metadata_server, backend_servers)


@pytest.fixture
def run_rhgen(tmp_path):
    """run_rhgen(args, env, cwd=tmp_path) -> CompletedProcess of `python -m rhgen ...` with a clean env."""

    def run_in(args, env=None, cwd=None):
        return run(args, env, cwd or tmp_path)

    return run_in


@pytest.fixture
def target(tmp_path, metadata_server):
    """tmp_path/live and the env for it: HAPROXY_* paths, BIND_ADDRESS=127.0.0.1, HTTP_PORT, STACK_DOMAIN=dev.tld."""
    return make_target(tmp_path / "live", metadata_server)


@pytest.fixture
def generate(run_rhgen, target):
    """generate(*flags, **env) runs `rhgen generate` against the target; env values override the target's."""

    def run_generate(*flags, **env):
        return run_rhgen(["generate", *flags], {**target.env, **env})

    return run_generate


@pytest.fixture
def haproxy(target, tmp_path):
    """haproxy for the target's files: .start() once they are generated (waits for the port), .get(host);
    terminated and waited for at teardown."""
    proxy = Haproxy(target, tmp_path / "haproxy.log")
    yield proxy
    proxy.stop()
