"""Each setting is declared once (rhgen/settings.py); defaults.yml, the README's reference and --help follow it."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from rhgen import reference
from rhgen.merge import read_yaml_file
from rhgen.settings import DEFAULTS, SETTINGS, Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["defaults.yml", "README.md"])
def test_generated_reference_matches_the_settings_table(name):
    expected = reference.expected_files(ROOT)[ROOT / name]
    assert (ROOT / name).read_text(encoding="utf-8") == expected, f"{name} drifted: run python -m rhgen.reference"


def test_reference_check_exits_1_naming_a_drifted_file(tmp_path, capsys):
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "defaults.yml").write_text(reference.defaults_yml().replace("http_port: 80 ", "http_port: 81 "), encoding="utf-8")

    assert reference.main(["--check"], root=tmp_path) == 1
    assert capsys.readouterr().err == "defaults.yml is out of date: run python -m rhgen.reference\n"
    assert reference.main([], root=tmp_path) == 0
    assert reference.main(["--check"], root=tmp_path) == 0
    assert "http_port: 80 " in (tmp_path / "defaults.yml").read_text(encoding="utf-8")


def test_bundled_defaults_yml_reads_back_as_the_declared_defaults():
    assert read_yaml_file(ROOT / "defaults.yml") == DEFAULTS


def test_every_setting_has_a_real_type_its_default_parses_to():
    hints = typing.get_type_hints(Settings)
    for setting in SETTINGS:
        assert hints[setting.name] is not typing.Any, setting.name
        if setting.default is None:  # required: no default to check
            continue
        expected = typing.get_origin(setting.type) or setting.type
        value = setting.parse(setting.default)
        assert type(value) is expected, (setting.name, value)


def test_help_shows_each_settings_env_var_and_default(run_rhgen):
    result = run_rhgen(["generate", "--help"], {"COLUMNS": "400"})
    text = re.sub(r"-\s+", "-", re.sub(r"\s+", " ", result.stdout))  # undo the wrapping

    assert result.returncode == 0, result.stderr
    for setting in SETTINGS:
        default = setting.shown_default
        shown = f"[env var: {setting.env}; default: {default}]" if default else f"[env var: {setting.env}]"
        assert f"{setting.flag} VALUE {setting.help}" in text, setting.flag
        assert shown in text, setting.flag
