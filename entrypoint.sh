#!/bin/sh
# Minimal entrypoint: render the first configuration, then run haproxy in master-worker mode.
# (The scheduled re-rendering and hitless reloads arrive with the runtime work.)
set -eu
rhgen generate
exec haproxy -W -db -f "${HAPROXY_CONFIG:-/usr/local/etc/haproxy/haproxy.cfg}" \
    -f "${HAPROXY_BACKEND_CONFIG:-/usr/local/etc/haproxy/backends.cfg}"
