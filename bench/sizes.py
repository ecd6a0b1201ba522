"""One environment size, measured: the no-change run, the changed run, the `haproxy -c` floor and
rhgen's own peak memory, against a real metadata HTTP server answering synthetic containers."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.metadata import CONTAINERS, MetadataServer, synthetic_aliases, synthetic_containers
from tests.support.rhgen import rhgen_env

from .procs import median_seconds, peak_rss_mb

RHGEN = [sys.executable, "-m", "rhgen", "generate"]


def measure_size(count: int, runs: int) -> dict[str, float | int]:
    base = json.dumps(synthetic_containers(count)).encode()
    grown = json.dumps(synthetic_containers(count, extra=1)).encode()
    server = MetadataServer(service_metadata=synthetic_aliases(count))
    server.answer(CONTAINERS, body=base)
    try:
        with tempfile.TemporaryDirectory(prefix="rhgen-bench-") as tmp:
            folder = Path(tmp)
            calls = folder / "haproxy-calls"
            recorder = folder / "haproxy-recorder"
            recorder.write_text(f'#!/bin/sh\necho x >> {calls}\nexec haproxy "$@"\n')
            recorder.chmod(0o755)
            env = rhgen_env(folder, 18080, RANCHER_API_HOST=server.host, HAPROXY_BIN=str(recorder))
            subprocess.run(RHGEN, env=env, check=True, capture_output=True)  # the files in service
            subprocess.run(RHGEN, env=env, check=True, capture_output=True)  # finds them in service: arms the shortcut
            calls.unlink()

            no_change = median_seconds(RHGEN, env, runs)
            haproxy_calls_without_change = calls.read_text().count("x") if calls.exists() else 0
            no_change_rss = peak_rss_mb(RHGEN, env)

            server.answer(CONTAINERS, rotate=[grown, base])  # every run sees a change
            changed = median_seconds(RHGEN, env, runs)
            changed_rss = peak_rss_mb(RHGEN, {**env, "HAPROXY_BIN": "true"})  # rhgen alone, not haproxy -c
            server.answer(CONTAINERS, body=base)

            check_floor = median_seconds(
                ["haproxy", "-c", "-q", "-f", env["HAPROXY_CONFIG"], "-f", env["HAPROXY_BACKEND_CONFIG"]], env, runs
            )
            backends = Path(env["HAPROXY_BACKEND_CONFIG"]).read_text().count("\nbackend ")
    finally:
        server.close()
    return {
        "containers": count,
        "answer_mb": len(base) / 1e6,
        "backends": backends,
        "no_change": no_change,
        "haproxy_calls_without_change": haproxy_calls_without_change,
        "changed": changed,
        "check_floor": check_floor,
        "no_change_rss": no_change_rss,
        "changed_rss": changed_rss,
    }
