"""Running rhgen for real: the environment of a run, `rhgen generate` as a subprocess, `rhgen watch`
as a process whose output is collected as it comes, and the entrypoint's process group with a
sweep of everything it started (by a marker in the environment)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metadata import DOMAIN, PROXY_LABEL, MetadataServer
from .net import Gone, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "entrypoint.sh"
RELOAD_HELPER = REPO / "rhgen-reload"
VENV_BIN = Path(sys.executable).parent  # where `rhgen` is installed next to this Python
MARKER_VAR = "RHGEN_TEST_MARKER"


def rhgen_env(folder: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of an rhgen run writing into `folder` (nothing inherited but PATH)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "STACK_DOMAIN": DOMAIN,
        "BIND_ADDRESS": "127.0.0.1",
        "HTTP_PORT": str(port),
        "HAPROXY_CONFIG": str(folder / "haproxy.cfg"),
        "HAPROXY_BACKEND_CONFIG": str(folder / "backends.cfg"),
        "HAPROXY_DOMAIN_MAP": str(folder / "domain.map"),
        "HAPROXY_SSL_CERT": str(folder / "haproxy.pem"),
        "HAPROXY_SSL_CRT_LIST": str(folder / "crt-list.txt"),
        "RHGEN_RETRIES": "0",
        **settings,
    }


def entrypoint_env(folder: Path, socket_dir: str, http_port: int, **settings: str) -> dict[str, str]:
    """The environment of an entrypoint under test: temp paths, an unprivileged port, 1 s period."""
    return rhgen_env(
        folder, http_port,
        # haproxy lives in /usr/sbin on Debian, which not every PATH holds
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/local/sbin:/usr/sbin:/sbin",
        HOME=str(folder),
        LANG="C.UTF-8",
        HAPROXY_MASTER_SOCKET=f"{socket_dir}/master.sock",
        RHGEN_SUPERCRONIC="supercronic-absent-in-tests",  # the plain loop, wherever supercronic exists
        RHGEN_INTERVAL="1",
        RHGEN_RETRY_MAX="1",
        RHGEN_CONNECT_TIMEOUT="1",
        RHGEN_READ_TIMEOUT="2",
        **settings,
    )


def run_rhgen(args: list[str], env: dict[str, str] | None, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m rhgen ...` in cwd, with only PATH inherited from the test run."""
    return subprocess.run(
        [sys.executable, "-m", "rhgen", *args],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


@dataclass
class Target:
    """The live output folder and the environment that points rhgen at it."""

    folder: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.folder / "haproxy.cfg"

    @property
    def backends(self) -> Path:
        return self.folder / "backends.cfg"

    @property
    def map(self) -> Path:
        return self.folder / "domain.map"

    @property
    def outputs(self) -> list[Path]:
        return [self.config, self.backends, self.map]

    def snapshot(self) -> dict[str, tuple[bytes, int, int, int]]:
        """content, inode, mtime (ns) and mode of every file in the folder."""
        result = {}
        for path in sorted(self.folder.iterdir()):
            stat = path.stat()
            result[path.name] = (path.read_bytes(), stat.st_ino, stat.st_mtime_ns, stat.st_mode)
        return result


def make_target(folder: Path, metadata_server: MetadataServer) -> Target:
    """An empty live folder and the environment pointing rhgen at it and at the metadata server."""
    folder.mkdir()
    port = free_port()
    env = rhgen_env(
        folder, port,
        RANCHER_API_HOST=metadata_server.host,
        RANCHER_PROXY_LABEL=PROXY_LABEL,
        RHGEN_CONNECT_TIMEOUT="2",
        RHGEN_READ_TIMEOUT="5",
    )
    return Target(folder, port, env)


class Watch:
    """`rhgen watch` as a subprocess; its output lines are collected as they come."""

    def __init__(self, env: dict[str, str], *args: str, python: str | None = None):
        self.process = subprocess.Popen(  # noqa: S603 - an argument list
            [python or sys.executable, "-m", "rhgen", "watch", *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def count_out(self, needle: str) -> int:
        return sum(needle in line for line in self.out)

    def wait_out(self, needle: str, count: int = 1, timeout: float = 10.0) -> None:
        self._wait(self.out, needle, count, timeout)

    def wait_err(self, needle: str, count: int = 1, timeout: float = 10.0) -> None:
        """Until `needle` is in `count` lines of stderr: the log (-v) and the warnings."""
        self._wait(self.err, needle, count, timeout)

    def _wait(self, lines: list[str], needle: str, count: int, timeout: float) -> None:
        def found() -> int:
            return sum(needle in line for line in lines)

        def seen() -> bool:
            if self.process.poll() is not None and found() < count:
                raise Gone(f"rhgen watch exited {self.process.returncode}: {self.err}")
            return found() >= count

        wait_for(seen, timeout=timeout, what=f"{count}x {needle!r} in {self.out} / {self.err}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.close()
        for reader in self._readers:
            reader.join(timeout=2)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


# --- the entrypoint's processes --------------------------------------------------------------


def marked_pids(marker: str) -> list[int]:
    """Every process whose environment carries this marker: descendants that escaped the group too."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def terminate_and_wait(self, timeout: float = 20.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)


def _default_signals() -> None:
    # A shell runs a background job with SIGINT and SIGQUIT ignored, and a signal ignored at a
    # process's start cannot be trapped (POSIX): pytest started with `cmd &` would hand that on, and
    # the entrypoint could not hear the SIGINT a test sends. A container's PID 1 starts with none ignored.
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


class Processes:
    """Starts processes in their own session with a marker; `cleanup` kills whatever is left."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.marker = uuid.uuid4().hex
        self.started: list[Proc] = []

    def spawn(self, argv: list[str], env: dict[str, str], name: str) -> Proc:
        env = {**env, MARKER_VAR: self.marker}
        stdout, stderr = self.folder / f"{name}.out", self.folder / f"{name}.err"
        # Files, not pipes: haproxy logs every request to stdout and must never block on it.
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            popen = subprocess.Popen(  # noqa: S603 - test processes, argument lists
                argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_default_signals,
            )
        proc = Proc(popen, stdout, stderr)
        self.started.append(proc)
        return proc

    def leftovers(self) -> list[str]:
        names = []
        for pid in marked_pids(self.marker):
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                names.append(f"{pid} {command}")
        return names

    def cleanup(self) -> None:
        for proc in self.started:  # shown by pytest when the test failed
            print(f"--- {proc.stdout.stem} (last lines) ---")
            print("\n".join(proc.log().splitlines()[-25:]))
        for proc in self.started:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=5)
        for pid in marked_pids(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
