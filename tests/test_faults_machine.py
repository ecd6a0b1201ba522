"""Faults of the machine: kill -9 at random moments, concurrent runs, a read-only or full disk,
a missing haproxy, and a sudden drop of routes. The promise under test: the files in service
are never lost nor half-written, haproxy -c accepts whatever is live, the next run repairs
what a killed one left, and every failure is one clear line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trustme

from tests.support.metadata import APP1, APP2, container, MetadataServer
from tests.support.net import free_port
from tests.support.outputs import chain_pem, error_lines, key_pem, map_entries, script, seed_style_config, warning_lines
from tests.support.profile import KILL_RUNS
from tests.support.rhgen import make_target
from rhgen import pipeline, plan, render, sources
from rhgen.routing import build_routing
from rhgen.reloads import pending as reload_pending
from rhgen.merge import load_settings

MACHINE = "Faults of the machine"
HELD = "exit 1, one error line, live files byte-identical, no temp file"


def temp_leftovers(folder: Path) -> list[str]:
    """What a run leaves behind only when it is interrupted: temp files and staging folders."""
    return sorted(p.name for p in folder.iterdir() if ".rhgen-" in p.name or p.name.endswith(".tmp"))


def haproxy_check(config: Path, backends: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["haproxy", "-c", "-q", "-f", str(config), "-f", str(backends)], capture_output=True, text=True, timeout=30
    )


def rendered(env: dict[str, str]) -> dict[str, bytes]:
    """The bytes rhgen would write for this environment, by file name (in-process, nothing written)."""
    settings = load_settings(None, env, {})
    source = sources.fetch(settings)
    routing = build_routing(source, settings.stack_domain, settings.rancher_label, settings.rancher_proxy_label)
    tls = plan.load_tls(settings, source, routing)
    return {os.path.basename(f.path): f.content for f in render.render_all(settings, routing, tls)}


# --- mounts ------------------------------------------------------------------------------------


@pytest.fixture
def mount(tmp_path):
    """mount(folder, size='64k') puts a small tmpfs on folder; remount_ro(folder); all unmounted at teardown."""
    mounted: list[Path] = []

    def do_mount(folder: Path, size: str = "64k") -> Path:
        folder.mkdir(exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    def remount_ro(folder: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)

    do_mount.remount_ro = remount_ro
    yield do_mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], capture_output=True)
        if os.path.ismount(folder):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system of folder to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (4096, 1):  # whole pages, then what is left of the last one
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


# --- the disk ----------------------------------------------------------------------------------


def test_full_disk_fails_cleanly_and_keeps_the_live_files(metadata_server, run_rhgen, tmp_path, mount, reliability):
    target = make_target(tmp_path / "live-parent", metadata_server)
    folder = mount(target.folder)
    metadata_server.set(APP1)
    assert run_rhgen(["generate"], target.env).returncode == 0
    fill(folder)
    before = target.snapshot()
    metadata_server.set(APP1 + APP2 + [container("app3", "web", "127.0.0.14", 80, name=f"app3-{i}") for i in range(40)])

    result = run_rhgen(["generate"], target.env)

    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "disk full" in error_lines(result)[0], result.stderr
    assert target.snapshot() == before
    assert temp_leftovers(folder) == []
    (folder / "filler").unlink()  # space again: the next run goes through
    again = run_rhgen(["generate"], target.env)
    assert again.returncode == 0, again.stderr
    assert "app3.dev.tld" in map_entries(target)
    reliability(MACHINE, "full disk (tmpfs)", held=HELD + "; the next run with space succeeds")


def test_full_disk_under_one_file_swaps_none_of_them(metadata_server, run_rhgen, tmp_path, mount, reliability):
    # The map lives on its own (full) file system, the rest beside the lock: without staging
    # every file before the first rename, backends.cfg would be new and domain.map old.
    target = make_target(tmp_path / "live", metadata_server)
    map_folder = mount(tmp_path / "maps")
    env = {**target.env, "HAPROXY_DOMAIN_MAP": str(map_folder / "domain.map")}
    metadata_server.set(APP1)
    assert run_rhgen(["generate"], env).returncode == 0
    fill(map_folder)
    before = {p: p.read_bytes() for p in (target.config, target.backends, map_folder / "domain.map")}
    metadata_server.set(APP1 + APP2)

    result = run_rhgen(["generate"], env)

    assert result.returncode == 1
    assert error_lines(result) == [f"rhgen: error: {map_folder / 'domain.map'}: cannot write (disk full)"]
    assert {p: p.read_bytes() for p in before} == before
    assert temp_leftovers(target.folder) == [] and temp_leftovers(map_folder) == []
    reliability(MACHINE, "full disk under one of the files", held="no file swapped (all staged first); " + HELD)


def test_a_write_that_fails_before_any_rename_owes_no_reload(metadata_server, run_rhgen, tmp_path, mount, reliability):
    # Only domain.map changes (an alias) and its file system is full: the swap fails staging its
    # first file, nothing is renamed, so no reload is owed. (It used to leave the reload-pending
    # marker behind, and a later run with nothing to change reloaded haproxy for nothing.)
    target = make_target(tmp_path / "live", metadata_server)
    map_folder = mount(tmp_path / "maps")
    reloads = tmp_path / "reloads"
    env = {
        **target.env, "HAPROXY_DOMAIN_MAP": str(map_folder / "domain.map"),
        "RELOAD_COMMAND": str(script(tmp_path / "reload", f"echo reload >> {reloads}\n")),
    }
    metadata_server.set(APP1)
    assert run_rhgen(["generate"], env).returncode == 0
    reloads.unlink()
    fill(map_folder)
    metadata_server.set(metadata={"aliases": {"app1": ["www"]}})

    result = run_rhgen(["generate"], env)

    assert result.returncode == 1
    assert error_lines(result) == [f"rhgen: error: {map_folder / 'domain.map'}: cannot write (disk full)"], result.stderr
    assert not reload_pending(str(target.backends))
    metadata_server.set(metadata={})  # the alias goes again: nothing to change, nothing to reload
    again = run_rhgen(["generate"], env)
    assert again.returncode == 0 and again.stdout.endswith("no change\n"), again.stdout + again.stderr
    assert not reloads.exists()
    reliability(MACHINE, "full disk under the only changed file (the first one staged)",
                held=HELD + "; no reload owed, none run afterwards")


def test_read_only_folder_is_a_clear_error_and_no_change_still_passes(
    metadata_server, run_rhgen, tmp_path, mount, reliability
):
    target = make_target(tmp_path / "live-parent", metadata_server)
    folder = mount(target.folder, "1m")
    metadata_server.set(APP1)
    assert run_rhgen(["generate"], target.env).returncode == 0
    mount.remount_ro(folder)
    before = target.snapshot()

    unchanged = run_rhgen(["generate"], target.env)
    metadata_server.set(APP1 + APP2)
    changed = run_rhgen(["generate"], target.env)

    assert unchanged.returncode == 0 and unchanged.stdout.endswith("no change\n"), unchanged.stderr
    assert changed.returncode == 1
    assert changed.stderr == f"rhgen: error: {target.backends}: folder {folder} is not writable\n"
    assert target.snapshot() == before
    reliability(MACHINE, "read-only target folder", held=HELD + "; an unchanged run still exits 0")


@pytest.mark.parametrize("kind", ["missing", "not executable", "a folder"])
def test_unusable_haproxy_binary_is_a_clear_error(kind, live, metadata_server, generate, target, tmp_path, reliability):
    binary = tmp_path / "haproxy"
    if kind == "not executable":
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o644)
    elif kind == "a folder":
        binary.mkdir()
    metadata_server.set(APP1 + APP2)

    result = generate(HAPROXY_BIN=str(binary))

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"rhgen: error: haproxy binary '{binary}' ")
    assert target.snapshot() == live
    reliability(MACHINE, f"haproxy binary {kind}", held=HELD)


# --- a target that cannot be replaced -------------------------------------------------------------


@pytest.fixture
def pinned():
    """pinned(path, how) makes one live file impossible to rename over: "chattr +i", or a read-only
    bind mount of the file onto itself; undone at teardown (even when the test fails)."""
    undo: list[list[str]] = []

    def pin(path: Path, how: str) -> None:
        if how == "chattr +i":
            commands = [["chattr", "+i", str(path)]]
            undo.append(["chattr", "-i", str(path)])
        else:
            commands = [["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,ro,bind", str(path)]]
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"{' '.join(command)}: {result.stderr.strip()} (needs root)")
            if command[:2] == ["mount", "--bind"]:
                undo.append(["umount", str(path)])

    yield pin
    for command in reversed(undo):
        subprocess.run(command, capture_output=True)


def changing_everything(metadata_server, env: dict[str, str]) -> dict[str, str]:
    """A new answer and a new port: backends.cfg, domain.map and haproxy.cfg (renamed last) all change."""
    metadata_server.set(APP1 + APP2)
    return {**env, "HTTP_PORT": str(free_port())}


@pytest.mark.parametrize("how", ["chattr +i", "read-only bind mount"])
def test_a_config_that_cannot_be_replaced_fails_before_any_file_is_swapped(
    how, metadata_server, run_rhgen, target, tmp_path, pinned, reliability
):
    reloads = tmp_path / "reloads"
    env = {**target.env, "RELOAD_COMMAND": str(script(tmp_path / "reload", f"echo reload >> {reloads}\n"))}
    metadata_server.set(APP1)
    assert run_rhgen(["generate"], env).returncode == 0
    reloads.unlink()
    pinned(target.config, how)
    before = target.snapshot()

    result = run_rhgen(["generate"], changing_everything(metadata_server, env))

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"rhgen: error: {target.config}: cannot write ("), line
    assert target.snapshot() == before  # backends.cfg and domain.map too: same bytes, same inodes
    assert not reload_pending(str(target.backends)) and not reloads.exists()
    assert temp_leftovers(target.folder) == []
    reliability(MACHINE, f"haproxy.cfg not replaceable ({how})", held=HELD + "; found before the first rename, no reload owed")


def test_a_rename_that_fails_after_the_check_puts_back_the_files_already_swapped(
    metadata_server, run_rhgen, target, tmp_path, reliability
):
    # haproxy -c that, as it finishes, makes haproxy.cfg immutable: the operator (or another
    # tool) pins the file after rhgen looked and before it renames, so the third rename fails.
    reloads = tmp_path / "reloads"
    env = {**target.env, "RELOAD_COMMAND": str(script(tmp_path / "reload", f"echo reload >> {reloads}\n"))}
    metadata_server.set(APP1)
    assert run_rhgen(["generate"], env).returncode == 0
    reloads.unlink()
    before = target.snapshot()
    pinned_by_check = script(
        tmp_path / "haproxy",
        f'{shutil.which("haproxy")} "$@"; status=$?\nchattr +i {target.config}\nexit $status\n',
    )
    try:
        result = run_rhgen(["generate"], {**changing_everything(metadata_server, env), "HAPROXY_BIN": str(pinned_by_check)})
    finally:
        subprocess.run(["chattr", "-i", str(target.config)], capture_output=True)

    assert result.returncode == 1
    assert error_lines(result) == [f"rhgen: error: {target.config}: cannot write (Operation not permitted)"], result.stderr
    assert target.snapshot() == before  # the two files renamed before it are back: same bytes, same inodes
    assert not reload_pending(str(target.backends)) and not reloads.exists()
    assert temp_leftovers(target.folder) == []
    reliability(MACHINE, "a rename failing after the others (file pinned during haproxy -c)",
                held=HELD + "; the files already renamed were put back, no reload owed")


def test_a_users_own_haproxy_cfg_pinned_read_only_is_left_alone_while_the_rest_swaps(
    metadata_server, run_rhgen, target, tmp_path, pinned, reliability
):
    # The report behind this: a user's haproxy.cfg made immutable, a changed run exited 1 with
    # backends.cfg and domain.map already swapped. A file without rhgen's header is never written.
    own = seed_style_config(target)
    target.config.write_bytes(own)
    metadata_server.set(APP1)
    assert run_rhgen(["generate"], target.env).returncode == 0
    pinned(target.config, "chattr +i")
    metadata_server.set(APP1 + APP2)

    result = run_rhgen(["generate"], target.env)

    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.endswith("changed: backends.cfg, domain.map\n")
    assert target.config.read_bytes() == own and "app2.dev.tld" in map_entries(target)
    reliability(MACHINE, "a user's own haproxy.cfg pinned with chattr +i",
                held="never written; the generated files swap, exit 0")


# --- leftovers of killed runs --------------------------------------------------------------------


def plant_leftovers(target) -> list[str]:
    """What a run killed during its check leaves: a staging folder (with a key) and a temp file."""
    staging = target.folder / ".rhgen-check-k1ll3d"
    staging.mkdir()
    (staging / "cert").write_text("-----BEGIN PRIVATE KEY-----\n")
    (target.folder / ".domain.map.rhgen-k1ll3d.tmp").write_text("half\n")
    return temp_leftovers(target.folder)


def test_a_run_with_nothing_to_change_removes_what_killed_runs_left(live, generate, target, reliability):
    assert plant_leftovers(target)

    result = generate()

    assert result.returncode == 0 and result.stdout.endswith("no change\n"), result.stderr
    assert temp_leftovers(target.folder) == []
    reliability(MACHINE, "staging left by a killed run, next run has nothing to change",
                held="removed by the next run (it takes the lock only when there is something to remove)")


def test_leftovers_are_kept_while_another_run_holds_the_lock(live, generate, target):
    planted = plant_leftovers(target)
    fd = os.open(target.folder / ".rhgen.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a run in the middle of its check holds it
        result = generate()
        assert result.returncode == 0 and result.stdout.endswith("no change\n"), result.stderr
        assert temp_leftovers(target.folder) == planted  # perhaps that run's own staging: left alone
    finally:
        os.close(fd)
    assert generate().returncode == 0
    assert temp_leftovers(target.folder) == []


# --- a sudden drop of routes ---------------------------------------------------------------------

FOUR = [container(f"app{i}", "web", f"127.0.0.{10 + i}", 8080, name=f"app{i}-web") for i in range(1, 5)]


@pytest.mark.parametrize(
    "keep, setting, warned",
    [(1, None, True), (2, None, False), (3, None, False), (1, "80", False), (3, "20", True), (1, "100", False)],
)
def test_sudden_drop_of_routes_is_a_warning_naming_the_counts(
    keep, setting, warned, metadata_server, generate, target, reliability
):
    metadata_server.set(FOUR)
    assert generate().returncode == 0
    metadata_server.set(FOUR[:keep])

    result = generate(**({"RHGEN_DROP_WARNING": setting} if setting else {}))

    assert result.returncode == 0, result.stderr
    assert len(map_entries(target)) == keep  # a warning, not a refusal
    share = (4 - keep) * 100 // 4
    expected = [f"rhgen: warning: routed hosts drop from 4 to {keep} ({share} % fewer; RHGEN_DROP_WARNING is {setting or 50} %)"]
    assert warning_lines(result) == (expected if warned else [])
    reliability(MACHINE, "sudden drop of routes", held="a warning naming both counts above RHGEN_DROP_WARNING, none below")


def test_an_alias_only_change_swaps_the_map_and_reloads(live, metadata_server, generate, target, tmp_path):
    # a known defect of the image rhgen replaces: a change of aliases alone never reloaded
    reloads = tmp_path / "reloads"
    reload = script(tmp_path / "reload", f"cat {target.map} >> {reloads}\n")
    metadata_server.set(metadata={"aliases": {"app1": ["www", "shop.example.com"]}})

    result = generate(RELOAD_COMMAND=str(reload))

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("changed: domain.map; reloaded\n")
    assert "shop.example.com app1" in reloads.read_text()


# --- concurrent runs ---------------------------------------------------------------------------


def test_ten_concurrent_runs_with_different_answers_take_turns(run_rhgen, tmp_path, reliability):
    servers = [MetadataServer() for _ in range(10)]
    try:
        for k, server in enumerate(servers):
            server.set([
                container("app1", "web", f"127.0.1.{k + 1}", 8080, name=f"app1-web-{k}"),
                container(f"only{k}", "web", f"127.0.2.{k + 1}", 8080, name=f"only{k}-web"),
            ])
            server.set(metadata={"aliases": {f"only{k}": ["www"]}})
        target = make_target(tmp_path / "live", servers[0])
        snapshots = tmp_path / "snapshots"
        snapshots.mkdir()
        # RELOAD_COMMAND runs under the lock, right after a swap: it copies the set as it is then.
        reload = script(
            tmp_path / "reload",
            f'd=$(mktemp -d {snapshots}/XXXXXX)\ncp {target.config} {target.backends} {target.map} "$d"/\n',
        )
        envs = [{**target.env, "RANCHER_API_HOST": s.host, "RELOAD_COMMAND": str(reload)} for s in servers]
        expected = [rendered(env) for env in envs]
        assert len({e["domain.map"] for e in expected}) == 10

        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "rhgen", "generate"], env={"PATH": os.environ["PATH"], **env},
                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for env in envs
        ]
        outputs = [run.communicate(timeout=120) for run in runs]

        assert [run.returncode for run in runs] == [0] * 10, outputs
        assert all(err == "" for _, err in outputs), outputs
        final = {p.name: p.read_bytes() for p in target.outputs}
        winners = [k for k, e in enumerate(expected) if e == final]
        assert len(winners) == 1
        taken = sorted(snapshots.iterdir())
        assert len(taken) == sum("; reloaded" in out for out, _ in outputs) >= 1
        for snapshot in taken:  # every set swapped in was whole, one answer's
            files = {p.name: p.read_bytes() for p in snapshot.iterdir()}
            assert files in expected
        assert temp_leftovers(target.folder) == []
        again = run_rhgen(["generate"], envs[winners[0]])
        assert again.returncode == 0 and again.stdout.endswith("no change\n")
    finally:
        for server in servers:
            server.close()
    reliability(MACHINE, "10 concurrent runs, 10 different answers", cases=10,
                held="all exit 0; every swapped set whole (seen under the lock); the final set is one answer's")


# --- kill -9 -------------------------------------------------------------------------------------


class KillCount:
    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.count += 1

    def reached(self) -> bool:
        with self.lock:
            return self.count >= self.target


class KillLane:
    """One live folder, two metadata servers with answers that differ in every file, and a loop:
    start `python -m rhgen generate` towards the other answer, SIGKILL it at a random moment,
    check what it left, then let the next run (in-process, the same code) complete."""

    def __init__(self, root: Path, tls: bool, seed: str) -> None:
        self.root = root
        root.mkdir()
        self.servers = [MetadataServer(), MetadataServer()]
        self.tmpdir = root / "tmpdir"
        self.tmpdir.mkdir()
        self.reloads = root / "reloads"
        self.rng = random.Random(seed)
        self.phases: dict[str, int] = {}
        self.checked: set[tuple[bytes, ...]] = set()  # live sets haproxy -c already accepted
        self.kills = 0
        self.clean_runs_to_the_old = 0  # clean runs with nothing to change, after a kill that swapped nothing
        leaves = []
        if tls:
            ca = trustme.CA()
            leaves = [ca.issue_cert("*.dev.tld"), ca.issue_cert("*.dev.tld", "dev.tld")]
        for k, server in enumerate(self.servers):
            server.set([
                container("app1", "web", f"127.0.0.{11 + k}", 8080 + k, health="healthy", name=f"app1-web-{k}"),
                container(f"app{2 + k}", "web", "127.0.0.20", 9000, name=f"app{2 + k}-web"),
            ])
            metadata = {"aliases": {"app1": ["www"] if k == 0 else ["api", "shop.example.com"]}}
            if tls:
                metadata["ssl_cert"], metadata["ssl_key"] = chain_pem(leaves[k]), key_pem(leaves[k])
            server.set(metadata=metadata)
        self.target = make_target(root / "live", self.servers[0])
        self.reload = script(root / "reload", f'echo "$1" >> {self.reloads}\n')
        self.envs = [
            {
                **self.target.env,
                "RANCHER_API_HOST": server.host,
                "HTTP_PORT": str(free_port()),  # so haproxy.cfg, swapped last, changes too
                "ENABLE_SSL": "true" if tls else "false",
                "HTTPS_PORT": str(free_port()),
                "HAPROXY_SSL_CRT_LIST": str(self.target.folder / "crt-list.txt"),
                "RELOAD_COMMAND": f"{self.reload} killed",
                "TMPDIR": str(self.tmpdir),
            }
            for server in self.servers
        ]
        self.expected = [rendered(env) for env in self.envs]
        self.names = sorted(self.expected[0])
        assert len(self.names) == (5 if tls else 3)
        assert all(self.expected[0][n] != self.expected[1][n] for n in self.names), "every file must change"
        for env in self.envs:  # live: answer 1; the first killed run goes to answer 0
            pipeline.generate(load_settings(None, env, {}))

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def command(self, k: int) -> dict:
        return {
            "args": [sys.executable, "-m", "rhgen", "generate"],
            "env": {"PATH": os.environ["PATH"], **self.envs[k]},
            "cwd": self.root,
        }

    def calibrate(self) -> float:
        """How long a run that changes every file takes here: kills fall within it."""
        times = []
        for k in (0, 1, 0, 1):
            started = time.monotonic()
            subprocess.run(**self.command(k), capture_output=True, timeout=60, check=True)
            times.append(time.monotonic() - started)
        return sorted(times)[2]

    def live(self) -> dict[str, bytes]:
        return {n: (self.target.folder / n).read_bytes() for n in self.names}

    def run(self, total: KillCount) -> None:
        """Kill runs until the lanes together reach the target (so the faster lane does more)."""
        full = self.calibrate()
        for attempt in range(total.target * 3):  # bounded; nearly every attempt is a kill
            if total.reached():
                return
            if self.attempt(attempt, full):
                total.add()
        raise AssertionError(f"only {self.kills} runs of this lane were killed before they finished")

    def attempt(self, attempt: int, full: float) -> bool:
        new_k = attempt % 2
        old, new = self.expected[1 - new_k], self.expected[new_k]
        process = subprocess.Popen(**self.command(new_k), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(self.rng.uniform(0.25, 0.9) * full)
            assert process.returncode == 0
            phase = "finished before the kill"
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            self.kills += 1
            phase = ""

        # What the kill left: every live file whole (the old or the new one), the set valid.
        files = self.live()
        for n in self.names:
            assert files[n] in (old[n], new[n]), f"attempt {attempt}: {n} is neither the old nor the new one"
        leftovers = temp_leftovers(self.target.folder) + sorted(os.listdir(self.tmpdir))
        pending = reload_pending(str(self.target.backends))
        phase = phase or _phase(files, old, new, leftovers, pending)
        self.phases[phase] = self.phases.get(phase, 0) + 1
        key = tuple(files[n] for n in self.names)
        if key not in self.checked:
            check = haproxy_check(self.target.config, self.target.backends)
            assert check.returncode == 0, f"attempt {attempt} ({phase}): haproxy -c: {check.stdout}{check.stderr}"
            self.checked.add(key)
        if "haproxy.pem" in files:
            assert (self.target.folder / "haproxy.pem").stat().st_mode & 0o777 == 0o600

        # A kill that swapped nothing leaves the old answer in service: a clean run towards that
        # answer has nothing to change, and still removes what the killed run left.
        if files == old:
            self.clean_run(1 - new_k)
            assert temp_leftovers(self.target.folder) == [], f"attempt {attempt} ({phase}): left by the killed run"
            self.clean_runs_to_the_old += 1

        # The next run completes the set, cleans up, and reloads when a reload was pending.
        before = self.reloads.read_text().count("next") if self.reloads.exists() else 0
        outcome = self.clean_run(new_k)
        assert self.live() == new, f"attempt {attempt} ({phase})"
        assert temp_leftovers(self.target.folder) == [], f"attempt {attempt} ({phase})"
        assert list(self.tmpdir.iterdir()) == [], f"attempt {attempt} ({phase}): the check's staging is in TMPDIR"
        assert not reload_pending(str(self.target.backends))
        if pending or files != new:
            assert outcome.reloaded and self.reloads.read_text().count("next") == before + 1, f"attempt {attempt} ({phase})"
        return phase != "finished before the kill"

    def clean_run(self, k: int) -> pipeline.Outcome:
        return pipeline.generate(load_settings(None, {**self.envs[k], "RELOAD_COMMAND": f"{self.reload} next"}, {}))


def _phase(files: dict[str, bytes], old: dict[str, bytes], new: dict[str, bytes], leftovers: list[str], pending: bool) -> str:
    if files == old:
        return "staged, nothing swapped" if leftovers or pending else "killed before writing anything"
    if files == new:
        return "swapped, reload pending" if pending else "swapped and reloaded"
    return "mid-swap: a mixed old/new set"


def test_kill_9_at_random_moments_never_loses_the_config(tmp_path, reliability):
    # Two lanes side by side (one with TLS: 5 files, one without: 3), one per core.
    seed = os.environ.get("RHGEN_KILL_SEED", "20261127")
    lanes = []
    try:
        lanes = [KillLane(tmp_path / "tls", True, seed + "tls"), KillLane(tmp_path / "plain", False, seed + "plain")]
        started = time.monotonic()
        total = KillCount(KILL_RUNS)
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(lane.run, total) for lane in lanes]:
                future.result()
        elapsed = time.monotonic() - started
    finally:
        for lane in lanes:
            lane.close()

    kills = sum(lane.kills for lane in lanes)
    assert kills >= KILL_RUNS
    phases: dict[str, int] = {}
    for lane in lanes:
        for phase, count in lane.phases.items():
            phases[phase] = phases.get(phase, 0) + count
    summary = f"{sum(phases.values())} runs started, {kills} killed: " + ", ".join(
        f"{count} {phase}" for phase, count in sorted(phases.items(), key=lambda item: -item[1])
    )
    unchanged = sum(lane.clean_runs_to_the_old for lane in lanes)
    assert unchanged > 0, "no kill left the old set in place: the no-change clean-up went untested"
    print(f"\n{kills} kills in {elapsed:.0f} s: {summary}; {unchanged} no-change runs after a kill")
    reliability(
        MACHINE, "kill -9 at random moments of changed runs", cases=kills,
        held=(
            f"{summary}; after every kill each live file was the old or the new one and haproxy -c accepted the set; "
            "the next run completed every time, left no temp file and reloaded whenever a reload was pending; "
            f"{unchanged} runs with nothing to change after a kill that swapped nothing removed the staging it left"
        ),
    )
