# rhgen: HAProxy routing from container metadata (Rancher 1.x, Docker, files).
# Debian 12's haproxy (2.6 LTS, built with the Prometheus exporter), rhgen in a virtualenv and
# supercronic for the schedule. The entrypoint starts as root only to give the unprivileged user
# rhgen (10001) the group of a mounted Docker socket, then drops to it (setpriv); haproxy may
# still bind 80 and 443 through a file capability. `docker/build.sh` builds it where Docker Hub
# or the package index cannot be reached; `docker build -t rhgen .` elsewhere.
FROM debian:12-slim

# SUPERCRONIC_VERSION=none leaves supercronic out (the entrypoint then runs a plain loop).
ARG SUPERCRONIC_VERSION=v0.2.49
# sha256 of the release assets supercronic-linux-amd64 and supercronic-linux-arm64 of that version
ARG SUPERCRONIC_SHA256_AMD64=a53ae236602c7338aba3fbaff40bda6300eae3b9fedb8261eb06cfe3724430c1
ARG SUPERCRONIC_SHA256_ARM64=02aa0cb229ba09050cba6638059dadb9eedc2276632ea43d6a57a2f8c1629dd5
ARG TARGETARCH=amd64

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Debian's own packages, updated by the distribution's security fixes: not pinned to a version.
# setcap lets haproxy (and only haproxy) bind ports below 1024 without root.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        haproxy python3 python3-venv socat inotify-tools ca-certificates curl libcap2-bin \
 && if [ "$SUPERCRONIC_VERSION" != none ]; then \
        case "$TARGETARCH" in \
            amd64) sum="$SUPERCRONIC_SHA256_AMD64" ;; \
            arm64) sum="$SUPERCRONIC_SHA256_ARM64" ;; \
            *) echo "no supercronic checksum for $TARGETARCH" >&2; exit 1 ;; \
        esac \
     && curl -fsSLo /usr/local/bin/supercronic \
            "https://github.com/aptible/supercronic/releases/download/${SUPERCRONIC_VERSION}/supercronic-linux-${TARGETARCH}" \
     && echo "${sum}  /usr/local/bin/supercronic" | sha256sum -c - \
     && chmod 0755 /usr/local/bin/supercronic; \
    fi \
 && setcap cap_net_bind_service=+ep /usr/sbin/haproxy \
 && apt-get purge -y curl libcap2-bin \
 && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

# The package, with its templates and defaults.yml, in a virtualenv of its own. docker/build.sh
# leaves a wheelhouse in .wheels (MANIFEST.in only makes the COPY valid without one); without it
# pip fetches from the package index.
COPY MANIFEST.in .wheel[s] /wheels/
COPY setup.py README.md MANIFEST.in defaults.yml /src/
COPY rhgen /src/rhgen
COPY templates /src/templates
RUN python3 -m venv /opt/rhgen/venv \
 && if ls /wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheels; fi \
 && /opt/rhgen/venv/bin/pip install --no-cache-dir --disable-pip-version-check "$@" /src \
 && rm -rf /src /wheels

COPY entrypoint.sh rhgen-reload crontab /opt/rhgen/
RUN if command -v supercronic >/dev/null; then supercronic -test /opt/rhgen/crontab; fi \
 && ln -s /opt/rhgen/rhgen-reload /usr/local/bin/rhgen-reload \
 && groupadd --system --gid 10001 rhgen \
 && useradd --system --uid 10001 --gid rhgen --home-dir /usr/local/etc/haproxy --shell /usr/sbin/nologin rhgen \
 && install -d -o rhgen -g rhgen /usr/local/etc/haproxy /run/haproxy

ENV PATH=/opt/rhgen/venv/bin:$PATH \
    HAPROXY_MASTER_SOCKET=/run/haproxy/master.sock \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /usr/local/etc/haproxy
VOLUME ["/usr/local/etc/haproxy"]
EXPOSE 80 443 1936
ENTRYPOINT ["/opt/rhgen/entrypoint.sh"]
