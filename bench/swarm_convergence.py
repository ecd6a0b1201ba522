"""How fast does the swarm source follow `docker service scale`, and how many requests fail during a
rolling `docker service update --force`? Not a test: a measurement to run by hand.

    .venv/bin/python -m bench.swarm_convergence --rounds 12     # builds the image as the tests do

Everything is real: the Docker daemon's swarm (a single-node one is made and left again when the
daemon is in none), the busybox backend as a replicated service on an attachable overlay
network, the rhgen image in watch mode (RHGEN_SOURCE=swarm) as a container on that network with
port 80 published on 127.0.0.1. A round scales the service up by one and measures until a request
through the proxy is answered by the new replica: from the scale command, and from the moment
the swarm reports the new task running (its Status.Timestamp), which is the part rhgen owns.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import threading
import time


from tests.support.net import get
from tests.support.docker import (
    DockerLab, build_backend_image, build_rhgen_image, docker, join_swarm, leave_swarm, wait_for,
)

SOCKET = "/var/run/docker.sock"


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"median": round(statistics.median(ordered), 3),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
            "max": round(ordered[-1], 3), "samples": len(ordered)}


def _started(task: dict) -> float:
    """The task's Status.Timestamp (RFC 3339 with nanoseconds) as seconds since the epoch."""
    stamp = task["Status"]["Timestamp"].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    moment = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() + float(f"0.{fraction or 0}")


def measure(rounds: int = 12, poll: float = 1.0, settle: float = 0.2, stop_signal: str = "") -> dict:
    build_backend_image()
    image = build_rhgen_image()
    made = join_swarm()
    lab = DockerLab()
    try:
        net = lab.network("net", "--driver", "overlay", "--attachable")
        stack = lab.name("app")
        labels = ["--label", f"{lab.route_label}=80", "--label", f"com.docker.stack.namespace={stack}"]
        # busybox httpd as PID 1 ignores SIGTERM: it serves on through the 10 s stop grace period.
        # --stop-signal SIGKILL makes it the app that dies at once, the worst case for a rolling update.
        signal = ["--stop-signal", stop_signal] if stop_signal else []
        web = lab.service("app_web", "--replicas", "1", "--network", net, *signal, *labels)
        lab.service("keep_web", "--network", net, "--label", f"{lab.route_label}=80",
                    "--label", f"com.docker.stack.namespace={lab.name('keep')}")
        known = {t["Status"]["ContainerStatus"]["ContainerID"][:12] for t in wait_for(lab.running(web, 1), 90, "web")}
        env = {"STACK_DOMAIN": "dev.tld", "RHGEN_SOURCE": "swarm", "RHGEN_MODE": "watch", "RANCHER_LABEL": lab.route_label,
               "RHGEN_DOCKER_NETWORK": net, "RHGEN_SWARM_POLL": str(poll), "RHGEN_SETTLE": str(settle)}
        proxy = lab.run(image, name=lab.name("proxy"), network=net,
                        options=["--publish", "127.0.0.1::80", "--volume", f"{SOCKET}:{SOCKET}:ro",
                                 *[f"--env={k}={v}" for k, v in env.items()]])
        port = lab.published_port(proxy)
        host = f"{stack}.dev.tld"
        wait_for(lambda: get(port, host, timeout=2.0)[0] == 200, 90, "the proxy routes the app")

        from_scale, from_running = [], []
        for replicas in range(2, rounds + 2):
            begun = time.time()
            docker("service", "scale", "--detach", f"{web}={replicas}")
            while True:
                status, body = get(port, host, timeout=2.0)
                if status == 200 and body.strip() not in known:
                    answered = time.time()
                    break
                time.sleep(0.01)
            tasks = wait_for(lab.running(web, replicas), 30, f"{replicas} tasks")
            new = [t for t in tasks if t["Status"]["ContainerStatus"]["ContainerID"][:12] == body.strip()][0]
            known.add(body.strip())
            from_scale.append(answered - begun)
            from_running.append(answered - _started(new))

        # Rolling update under a bounded load: one client, one request at a time, a new connection each.
        counts = {"ok": 0, "failed": 0}
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    ok = get(port, host, timeout=2.0)[0] == 200
                except OSError:
                    ok = False
                counts["ok" if ok else "failed"] += 1
                time.sleep(0.01)

        client = threading.Thread(target=load)
        client.start()
        rolled = time.time()
        docker("service", "update", "--force", "--detach=false", web, timeout=600)
        time.sleep(3 * poll + settle + 1)  # the last replaced task's successor gets routed
        stop.set()
        client.join()
        return {"replicas": rounds + 1, "scale_to_answer_seconds": _summary(from_scale),
                "running_to_answer_seconds": _summary(from_running), "rolling_update": {**counts,
                "seconds": round(time.time() - rolled, 1)}, "poll": poll, "settle": settle,
                "stop_signal": stop_signal or "SIGTERM (ignored by the app: it stops after the 10 s grace period)"}
    finally:
        lab.close()
        if made:
            leave_swarm()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--poll", type=float, default=1.0, help="RHGEN_SWARM_POLL")
    parser.add_argument("--settle", type=float, default=0.2, help="RHGEN_SETTLE")
    parser.add_argument("--stop-signal", default="", help="the app's stop signal (SIGKILL: it dies at once)")
    print(json.dumps(measure(**vars(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
