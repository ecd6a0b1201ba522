"""Failed requests under load across reloads: rhgen's master-worker reload vs the seed's `-sf` restart.

A bounded wrk load (fixed duration, a few dozen connections) runs against haproxy on 127.0.0.1
while 20 reloads happen. The backend is a second haproxy answering 200 itself, so the only
failures counted are the proxy's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import accepts, free_port, wait_for

BACKEND_CFG = """
global
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend backend
    bind 127.0.0.60:{port}
    http-request return status 200 content-type text/plain string ok
"""


@dataclass(frozen=True)
class LoadResult:
    way: str
    connection: str
    requests: int
    failed: int
    reloads: int
    detail: str


def _wrk(port: int, seconds: float, connections: int, close: bool) -> tuple[int, int, str]:
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{int(seconds)}s", "--timeout", "5s"]
    if close:
        command += ["-H", "Connection: close"]
    command += ["-H", "Host: app1.dev.tld", f"http://127.0.0.1:{port}/"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    total = int(re.search(r"(\d+) requests in", output).group(1))
    failed = 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        failed += int(non2xx.group(1))
    detail = "; ".join(line.strip() for line in output.splitlines() if "errors" in line or "Non-2xx" in line)
    return total, failed, detail or "no errors"


def _render(folder: Path, front_port: int, back_port: int, pidfile: Path | None) -> Path:
    """A config in the shape rhgen renders (same defaults section) routing app1.dev.tld to the backend."""
    config = folder / "haproxy.cfg"
    pid_line = f"    pidfile {pidfile}\n" if pidfile else ""
    config.write_text(
        "global\n"
        f"{pid_line}"
        "    hard-stop-after 30s\n"
        "defaults\n    mode http\n    option forwardfor\n    option idle-close-on-response\n"
        "    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
        "    timeout http-request 10s\n    timeout http-keep-alive 10s\n"
        f"frontend http\n    bind 127.0.0.1:{front_port}\n    default_backend app1\n"
        f"backend app1\n    server web 127.0.0.60:{back_port}\n"
    )
    return config


def measure(way: str, close: bool, reloads: int = 20, seconds: float = 10.0, connections: int = 32) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="rhgen-bench-load-") as tmp:
        folder = Path(tmp)
        back_port, front_port = free_port("127.0.0.60"), free_port()
        (folder / "backend.cfg").write_text(BACKEND_CFG.format(port=back_port))
        backend = subprocess.Popen(["haproxy", "-db", "-f", str(folder / "backend.cfg")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes = [backend]
        try:
            wait_for(lambda: accepts("127.0.0.60", back_port), what=f"127.0.0.60:{back_port} to listen")
            if way == "rhgen":
                config = _render(folder, front_port, back_port, None)
                master = subprocess.Popen(
                    ["haproxy", "-W", "-db", "-S", str(folder / "master.sock"), "-f", str(config)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                processes.append(master)

                def reload() -> None:
                    master.send_signal(signal.SIGUSR2)
            else:
                pidfile = folder / "haproxy.pid"
                config = _render(folder, front_port, back_port, pidfile)
                subprocess.run(["haproxy", "-D", "-f", str(config)], check=True)

                def reload() -> None:
                    old = pidfile.read_text().split()
                    subprocess.run(["haproxy", "-D", "-f", str(config), "-sf", *old], check=True)
            wait_for(lambda: accepts("127.0.0.1", front_port), what=f"127.0.0.1:{front_port} to listen")
            outcome: dict[str, tuple[int, int, str]] = {}
            load = threading.Thread(target=lambda: outcome.setdefault("wrk", _wrk(front_port, seconds, connections, close)))
            load.start()
            time.sleep(seconds * 0.1)
            interval = seconds * 0.8 / reloads
            for _ in range(reloads):
                reload()
                time.sleep(interval)
            load.join()
            total, failed, detail = outcome["wrk"]
            return LoadResult(way, "close" if close else "keep-alive", total, failed, reloads, detail)
        finally:
            if way != "rhgen":
                pidfile = folder / "haproxy.pid"
                if pidfile.exists():
                    for pid in pidfile.read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGTERM)
                        except ProcessLookupError:
                            pass
                subprocess.run(["pkill", "-f", f"haproxy -D -f {folder}"], check=False)
            for process in processes:
                process.terminate()
                process.wait(10)
