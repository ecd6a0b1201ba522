"""Synthetic Rancher environments and a real metadata HTTP server that serves them."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

LABEL = "map-public-http"
PER_STACK = 5


def synthetic_containers(count: int, extra: int = 0) -> list[dict[str, Any]]:
    """`count` containers, about 5 per stack, shaped like Rancher's answer; one in 50 is unroutable
    (stopped, unhealthy or a bad label). `extra` adds containers of one more stack at the end."""
    containers = []
    for index in range(count + extra):
        stack = f"app-r{index // PER_STACK}" if index < count else "app-new"
        state, health, port = "running", "healthy", "8080"
        if index < count and index % 50 == 7:
            state = "stopped"
        elif index < count and index % 50 == 17:
            health = "unhealthy"
        elif index < count and index % 50 == 27:
            port = "80a"
        containers.append(
            {
                "create_index": index,
                "dns": ["169.254.169.250"],
                "dns_search": [f"{stack}.rancher.internal", "rancher.internal"],
                "health_check": None,
                "health_state": health,
                "host_uuid": "5c8a3e4f-1b2c-4d5e-8f90-a1b2c3d4e5f6",
                "hostname": f"{stack}-web-{index % PER_STACK + 1}",
                "ips": [_ip(index)],
                "labels": {
                    "io.rancher.stack.name": stack,
                    "io.rancher.stack_service.name": f"{stack}/web",
                    "io.rancher.container.uuid": f"{index:08x}-0000-4000-8000-000000000000",
                    LABEL: port,
                },
                "name": f"{stack}-web-{index % PER_STACK + 1}",
                "primary_ip": _ip(index),
                "service_name": "web",
                "stack_name": stack,
                "state": state,
                "uuid": f"{index:08x}-0000-4000-8000-000000000000",
            }
        )
    return containers


def _ip(index: int) -> str:
    # Never contacted, except the added stack's container in the convergence run.
    return f"127.1.{index // 250}.{index % 250 + 1}"


def aliases(count: int) -> dict[str, Any]:
    return {"aliases": {f"app-r{n}": [f"www{n}", f"shop{n}.example.com"] for n in range(0, count // PER_STACK, 20)}}


class MetadataServer:
    """Answers /latest/containers with one of several prepared bodies: fixed, or alternating per
    request (so every rhgen run sees a change)."""

    def __init__(self, bodies: list[bytes], service_metadata: dict[str, Any]) -> None:
        self.bodies = bodies
        self.current = 0
        self.alternate = False
        metadata = json.dumps(service_metadata).encode()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once, as from a real server

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/latest/containers":
                    body = owner.bodies[owner.current]
                    if owner.alternate:
                        owner.current = (owner.current + 1) % len(owner.bodies)
                elif self.path == "/latest/self/service/metadata":
                    body = metadata
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
