"""The side-by-side harness of bench/traefik.py (issue 16): rhgen and Traefik follow the same real
Docker Engine, and one container carrying both label sets is served by both, then by neither."""

from __future__ import annotations

from tests.support.docker import docker
from tests.support.traefik import host_of, run_backend


def test_one_container_with_both_label_sets_answers_through_rhgen_and_traefik(docker_lab, side_by_side):
    pair, network = side_by_side
    lab = docker_lab
    stack = lab.name("both")
    web = f"{stack}-1"
    host = host_of(stack)
    assert {proxy: pair.answer(proxy, host)[0] for proxy in pair.ports} == {"rhgen": 503, "traefik": 404}

    run_backend(lab, web, stack, network)
    for proxy in pair.ports:
        pair.wait_routed(proxy, host, web + "\n", timeout=30)
    assert {proxy: pair.answer(proxy, host) for proxy in pair.ports} == {
        "rhgen": (200, web + "\n"), "traefik": (200, web + "\n")}

    docker("rm", "-f", web)
    for proxy, gone in (("rhgen", 503), ("traefik", 404)):
        pair.wait_until(proxy, host, lambda answer, gone=gone: answer[0] == gone, timeout=30)
