"""The Source interface: every registered source is a module with the same fetch and watch, the
registry is the one list of source names, and the Docker source hands the model Containers."""

from __future__ import annotations

import importlib
import inspect

import pytest

from rhgen import sources
from rhgen.errors import SettingsError
from rhgen.model import Container
from rhgen.merge import load_settings
from rhgen.sources import docker


@pytest.mark.parametrize("name", sources.NAMES)
def test_every_registered_source_fetches_and_watches_alike(name):
    module = importlib.import_module(f"rhgen.sources.{sources.REGISTRY[name]}")
    assert list(inspect.signature(module.fetch).parameters) == ["settings"]
    assert list(inspect.signature(module.watch).parameters) == ["settings", "notify", "stop"]


def test_rhgen_source_takes_exactly_the_registered_names(tmp_path):
    answers = tmp_path / "answers.json"
    answers.write_text('{"containers": []}')
    for name in sources.NAMES:
        settings = load_settings(None, {"STACK_DOMAIN": "dev.tld", "RHGEN_SOURCE": name.upper(), "METADATA_FILE": str(answers)}, {})
        assert sources.kind(settings) == name
    with pytest.raises(SettingsError) as error:
        load_settings(None, {"STACK_DOMAIN": "dev.tld", "RHGEN_SOURCE": "consul"}, {})
    assert f"use {', '.join(sources.NAMES)}" in str(error.value)


def test_docker_container_becomes_a_model_container():
    item = {
        "Id": "0123456789abcdef",
        "Names": ["/proj-web-1"],
        "State": "running",
        "Status": "Up 3 seconds (health: starting)",
        "Labels": {"com.docker.compose.project": "proj", "com.docker.compose.service": "web", "map-public-http": "80",
                   "rhgen.weight": 5},
        "NetworkSettings": {"Networks": {"zeta": {"IPAddress": "10.0.9.2"}, "alpha": {"IPAddress": "10.0.1.2"}}},
    }
    assert docker.container(item, 0, "") == Container(
        name="proj-web-1", uuid="0123456789ab", stack="proj", service="web", ip="10.0.1.2", state="running",
        health="starting", labels={"com.docker.compose.project": "proj", "com.docker.compose.service": "web",
                                   "map-public-http": "80", "rhgen.weight": "5"},
    )
