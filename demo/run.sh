#!/bin/sh
# Sets rhgen up on a Debian 12 box and runs it on the bundled demo environment:
# installs haproxy (Debian's package) when missing, installs rhgen with its test
# extras into ./.venv, renders demo/out/, prints the routes and checks the result
# with haproxy -c. Run from the repository's top folder: sh demo/run.sh
set -eu
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v haproxy >/dev/null 2>&1; then
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy
fi
if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv 2>/dev/null; then
        rm -rf .venv
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
        python3 -m venv .venv
    fi
fi
.venv/bin/pip install -q --disable-pip-version-check '.[test]'

mkdir -p demo/out
.venv/bin/rhgen generate --config demo/rhgen.yml
.venv/bin/rhgen routes --config demo/rhgen.yml
haproxy -c -f demo/out/haproxy.cfg -f demo/out/backends.cfg
echo "Start it with: haproxy -W -db -f demo/out/haproxy.cfg -f demo/out/backends.cfg"
