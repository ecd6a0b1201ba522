"""docs/reliability.md, produced by the test suite rather than written by hand.

The reliability tests record each fault class they cover, how many cases ran and what held
(the `reliability` fixture in conftest.py); faults covered by older tests elsewhere are listed
in EARLIER_TESTS and count one case per passing run. At the end of a session run with
RHGEN_WRITE_RELIABILITY=1, the table is written with each test's real outcome, so a failing
test shows as FAILED there. Normal runs write nothing and leave the tree clean.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

GROUPS = ("Faults of the source", "Faults of the machine", "Hostile input", "Security hygiene", "Faults of the backends")

# Faults covered by tests that predate the reliability work: (group, fault, test id, what held).
_SOURCE_HELD = "exit 1, one error line, live files byte-identical (content, inode, mtime), no temp file"
EARLIER_TESTS = [
    ("Faults of the source", "connection refused",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[refused]", _SOURCE_HELD),
    ("Faults of the source", "accepts, never answers (read timeout)",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[read timeout]", _SOURCE_HELD),
    ("Faults of the source", "answers later than the read timeout",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[slower than the read timeout]", _SOURCE_HELD),
    ("Faults of the source", "body trickles in past the read timeout",
     "test_generate.py::test_metadata_trickling_in_slower_than_the_read_timeout_fails", _SOURCE_HELD),
    ("Faults of the source", "HTTP 500",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[500]", _SOURCE_HELD),
    ("Faults of the source", "HTTP 404 on /containers",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[404 on containers]", _SOURCE_HELD),
    ("Faults of the source", "HTTP 403 on the service metadata",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[403 on metadata]", _SOURCE_HELD),
    ("Faults of the source", "HTML instead of JSON",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[not JSON]", _SOURCE_HELD),
    ("Faults of the source", "empty answer",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[empty answer]", _SOURCE_HELD),
    ("Faults of the source", "truncated JSON (connection closed mid-body)",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[answer cut short]", _SOURCE_HELD),
    ("Faults of the source", "object instead of a list",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[object, not list]", _SOURCE_HELD),
    ("Faults of the source", "service metadata is a list",
     "test_generate.py::test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone[metadata is a list]", _SOURCE_HELD),
    ("Faults of the source", "5xx retried RHGEN_RETRIES times",
     "test_generate.py::test_5xx_is_retried_as_often_as_configured", "exactly 1 + RHGEN_RETRIES requests, then exit 1, nothing changed"),
    ("Faults of the machine", "missing haproxy binary",
     "test_generate.py::test_missing_haproxy_binary_is_an_error_and_nothing_changes", "exit 1, one error line, live files byte-identical"),
    ("Faults of the machine", "missing target folder",
     "test_generate.py::test_missing_target_folder_is_a_clear_error", "exit 1, one error line, nothing created"),
    ("Faults of the machine", "metadata returns no container (empty result)",
     "test_generate.py::test_empty_result_does_not_replace_routes_in_service", "exit 1 naming --allow-empty, live files byte-identical"),
    ("Faults of the machine", "haproxy -c rejects the rendered set",
     "test_generate.py::test_config_haproxy_rejects_is_reported_and_not_installed", "exit 1 with haproxy's lines, live files byte-identical"),
    ("Faults of the machine", "reload command fails",
     "test_fast_path.py::test_a_failed_reload_is_retried_by_the_next_run_even_without_change", "the next run reloads though nothing changed"),
]


@dataclass
class Row:
    group: str
    fault: str
    test: str
    cases: int
    held: str


class Ledger:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.outcomes: dict[str, str] = {}  # test id -> passed / failed / skipped

    def record(self, group: str, fault: str, test: str, cases: int, held: str) -> None:
        """Add `cases` to the row of this fault and test (the same row may be recorded several times)."""
        assert group in GROUPS, group
        row = self.rows.setdefault((fault, test), Row(group, fault, test, 0, held))
        row.cases += cases
        row.held = held

    def note(self, test: str, when: str, outcome: str) -> None:
        if outcome != "passed":
            self.outcomes[test] = outcome
        elif when == "call":
            self.outcomes.setdefault(test, "passed")

    def table_rows(self) -> list[tuple[Row, str]]:
        """(row, outcome); the parameters of one test that record the same fault share a row."""
        recorded = list(self.rows.values())
        for group, fault, test, held in EARLIER_TESTS:
            if test in self.outcomes:
                recorded.append(Row(group, fault, test, 1 if self.outcomes[test] == "passed" else 0, held))
        merged: dict[tuple[str, str], tuple[Row, str]] = {}
        for row in recorded:
            outcome = self.outcomes.get(row.test, "not run")
            key = (row.fault, row.test.split("[")[0])
            if key in merged:
                first, seen = merged[key]
                first.cases += row.cases
                merged[key] = (first, seen if seen != "passed" else outcome)
            else:
                merged[key] = (Row(row.group, row.fault, key[1] if "[" in row.test else row.test, row.cases, row.held), outcome)
        return sorted(merged.values(), key=lambda item: GROUPS.index(item[0].group))  # stable within a group

    def markdown(self) -> str:
        lines = [
            "# Reliability: faults, hostile input and what held",
            "",
            "Generated by the test suite (`RHGEN_WRITE_RELIABILITY=1 .venv/bin/pytest`), not written by hand:",
            "each row is a test that ran in that session, with the number of cases it ran and its outcome.",
            "\"Nothing lost\" means: the live files are byte-identical to the last good set (or, after a",
            "kill, each one complete and the set accepted by `haproxy -c`), and no temp file is left.",
            "",
            f"Session: {datetime.date.today().isoformat()}, Python {platform.python_version()}, {_haproxy_version()}, "
            f"{os.cpu_count()} cores.",
        ]
        for group in GROUPS:
            rows = [(r, outcome) for r, outcome in self.table_rows() if r.group == group]
            if not rows:
                continue
            lines += ["", f"## {group}", "", "| fault | test | cases | result |", "|---|---|---:|---|"]
            for row, outcome in rows:
                result = f"passed: {row.held}" if outcome == "passed" else outcome.upper()
                lines.append(f"| {_cell(row.fault)} | `{row.test}` | {row.cases:,} | {_cell(result)} |")
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown(), encoding="utf-8")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _haproxy_version() -> str:
    try:
        first = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        return "haproxy not found"
    words = first.split()
    return f"HAProxy {words[2]}" if len(words) > 2 else "HAProxy"


def short_id(nodeid: str) -> str:
    """tests/test_x.py::test_y[p] -> test_x.py::test_y[p]"""
    return nodeid.split("/")[-1]


LEDGER = Ledger()
