"""How fast does `rhgen watch` make a new container routable, and how many reloads does the
runtime API save? Not a test: a measurement to run by hand or from a benchmark harness.

    .venv/bin/python -m bench.watch_convergence            # 20 rounds of each kind
    .venv/bin/python -m bench.watch_convergence --rounds 50 --settle 0.1

Everything is real and local: a Rancher metadata server with the long poll (tests/servers.py),
haproxy -W with a master socket, `rhgen watch` as a process, one HTTP server per "container"
on 127.0.0.x. A round changes the metadata and measures, from that moment, until a request
through haproxy with the new Host header is answered by the new container.

measure() returns the numbers as a dict, for a harness that wants to import it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


from tests.support.apps import App
from tests.support.haproxy import Haproxy
from tests.support.metadata import container, MetadataServer
from tests.support.net import free_port
from tests.support.rhgen import rhgen_env, Watch


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[max(0, int(len(ordered) * 0.9) - 1)], 3),
        "max": round(ordered[-1], 3),
    }


def measure(rounds: int = 20, settle: float = 0.2, stats_socket: bool = True) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="rhb-", dir="/tmp"))
    metadata, apps, haproxy, watcher = MetadataServer(), [], None, None
    try:
        first = App("app0", "127.0.0.10")
        apps.append(first)
        metadata.set([container("app0", "web", first.ip, first.port, name="app0-web-1")], {"aliases": {}})
        port = free_port()
        env = rhgen_env(folder, port, RANCHER_API_HOST=metadata.host, RHGEN_SETTLE=str(settle),
                        HAPROXY_STATS_SOCKET=str(folder / "stats.sock") if stats_socket else "")
        watcher = Watch(env)  # renders the first configuration
        watcher.wait_out("changed:")
        haproxy = Haproxy(folder, port).start()
        watcher.stop()
        watcher = Watch({**env, "RELOAD_COMMAND": haproxy.reload_command})
        time.sleep(1)
        reloads_before = haproxy.reloads

        new_stack, new_server, new_alias = [], [], []
        aliases: dict[str, list[str]] = {}
        for i in range(1, rounds + 1):
            # A new stack: a new backend, always a reload.
            app = App(f"stack{i}", f"127.0.1.{i % 250 + 1}")
            apps.append(app)
            metadata.add(container(f"stack{i}", "web", app.ip, app.port, name=f"stack{i}-web-1"))
            new_stack.append(haproxy.wait_routes(f"stack{i}.dev.tld", app.name))
            time.sleep(0.3)

            # One more container in an existing stack: a new server, a reload; measured until it answers.
            second = App(f"stack{i}-2", f"127.0.2.{i % 250 + 1}")
            apps.append(second)
            metadata.add(container(f"stack{i}", "web", second.ip, second.port, name=f"stack{i}-web-2"))
            started = time.monotonic()
            while haproxy.get(f"stack{i}.dev.tld")[1] != second.name and time.monotonic() - started < 10:
                time.sleep(0.005)
            new_server.append(time.monotonic() - started)
            time.sleep(0.3)

            # A new alias: host map only, the runtime API when the socket is set.
            aliases[f"stack{i}"] = [f"www{i}"]
            metadata.set(metadata={"aliases": aliases})
            new_alias.append(haproxy.wait_routes(f"www{i}.dev.tld", app.name))
            time.sleep(0.3)

        reloads = haproxy.reloads - reloads_before
        changes = 3 * rounds
        return {
            "rounds": rounds,
            "settle": settle,
            "stats_socket": stats_socket,
            "new_stack_seconds": _summary(new_stack),
            "new_server_seconds": _summary(new_server),
            "new_alias_seconds": _summary(new_alias),
            "changes": changes,
            "reloads": reloads,
            "reloads_avoided": changes - reloads,
        }
    finally:
        if watcher:
            watcher.stop()
        if haproxy:
            haproxy.close()
        for app in apps:
            app.close()
        metadata.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--settle", type=float, default=0.2)
    parser.add_argument("--no-stats-socket", action="store_true", help="Reload for every change (for comparison).")
    args = parser.parse_args()
    print(json.dumps(measure(args.rounds, args.settle, not args.no_stats_socket), indent=2))


if __name__ == "__main__":
    main()
