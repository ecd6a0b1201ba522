"""Real haproxy for tests and bench: `haproxy -W -db [-S <master socket>]` on rhgen's generated
files, real requests to it, and the master CLI (reload counter, workers) of any master socket."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .net import Gone, accepts, get, routes_to, unix_command, wait_for


def master(socket_path: str, command: str, timeout: float = 5.0) -> str:
    """One command to a master CLI, retried: the master re-executes itself on every reload and its
    socket refuses for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return unix_command(socket_path, command)
        except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group of `process` (started with start_new_session), SIGKILL after `grace` s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def proc_table(socket_path: str) -> tuple[list[str], list[int]]:
    """From `show proc`: the master's line (split) and the pids of the current workers."""
    master_words: list[str] = []
    workers: list[int] = []
    section = "master"
    for line in master(socket_path, "show proc", timeout=10).splitlines():
        if line.startswith("# "):
            section = line[2:].strip()
            continue
        words = line.split()
        if len(words) >= 3 and words[1] == "master":
            master_words = words
        elif len(words) >= 2 and words[1] == "worker" and section == "workers":
            workers.append(int(words[0]))
    assert master_words, "no master line in show proc"
    return master_words, workers


def master_reloads(socket_path: str) -> tuple[int, int]:
    """(reloads, failed) from the master's `show proc` line."""
    words = proc_table(socket_path)[0]
    return int(words[2]), int(words[4].rstrip("]"))


def master_pid(socket_path: str) -> int:
    return int(proc_table(socket_path)[0][0])


def current_worker(socket_path: str) -> int:
    """Pid of the worker that serves now (the first under "# workers")."""
    return proc_table(socket_path)[1][0]


class Haproxy:
    """haproxy on folder/haproxy.cfg + folder/backends.cfg, listening on `port`. Its log and master
    socket go to run_dir (default: the folder; give another one when the folder must hold only
    rhgen's files). master=False: no master socket (a long run_dir path passes the 108-byte limit)."""

    def __init__(self, folder: Path, port: int, *, run_dir: Path | None = None, master: bool = True) -> None:
        self.folder, self.port = folder, port
        run_dir = run_dir or folder
        self.log_path = run_dir / "haproxy.log"
        self.master_socket = str(run_dir / "master.sock") if master else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Haproxy:
        """Start haproxy on the generated files and wait until it serves (and its master answers)."""
        config, backends = self.folder / "haproxy.cfg", self.folder / "backends.cfg"
        assert config.is_file() and backends.is_file(), "generate the files first"
        command = [shutil.which("haproxy") or "haproxy", "-W", "-db"]
        if self.master_socket:
            command += ["-S", self.master_socket]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - an argument list
                [*command, "-f", str(config), "-f", str(backends)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        try:
            wait_for(self._listening, timeout=10, what=f"haproxy to listen on {self.port}")
        except BaseException:
            self.close()  # nobody else holds this object yet
            raise
        return self

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise Gone(f"haproxy exited {self.process.returncode}: {self.log_path.read_text()}")
        if not accepts("127.0.0.1", self.port):
            return False
        return not self.master_socket or bool(self.processes()[1])  # the master accepts a moment after its file appears

    @property
    def reload_command(self) -> str:
        assert self.process is not None
        return f"kill -USR2 {self.process.pid}"

    def master(self, command: str, timeout: float = 5.0) -> str:
        assert self.master_socket, "started with master=False"
        return master(self.master_socket, command, timeout)

    def processes(self) -> tuple[int, list[int]]:
        """(reload counter of the master, pids of the current workers) from `show proc`."""
        assert self.master_socket, "started with master=False"
        words, workers = proc_table(self.master_socket)
        return int(words[2]), workers

    @property
    def reloads(self) -> int:
        return self.processes()[0]

    def get(self, host: str, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
        """One real HTTP request to haproxy with this Host header -> (status, body)."""
        return get(self.port, host, path, headers={"Connection": "close", **(headers or {})})

    def wait_routes(self, host: str, body: str, timeout: float = 10.0) -> float:
        """Seconds until `host` answers 200 with `body` through haproxy."""
        started = time.monotonic()
        wait_for(routes_to(self.port, host, body), timeout=timeout, interval=0.01, what=f"{host} -> {body}")
        return time.monotonic() - started

    def close(self) -> None:
        if self.process:
            stop_group(self.process, grace=5)
