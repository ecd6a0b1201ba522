#!/bin/sh
# Build the rhgen image from the repository's Dockerfile: docker/build.sh [TAG] [docker build options]
#
# On a machine that reaches Docker Hub and the Python package index this is `docker build -t TAG .`
# with a wheelhouse. Where the base image cannot be pulled it is bootstrapped once from Debian's
# packages (mmdebstrap, else debootstrap) with the mirror this machine's apt sources name, and
# imported under the base image's name, so later builds reuse it. The Python dependencies are
# always fetched here, on the host, into a wheelhouse (.wheels) that the build installs from:
# the build container may not reach the package index. SUPERCRONIC_VERSION=none skips
# supercronic where its release site cannot be reached (the entrypoint then runs a plain loop).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-rhgen:dev}
[ "$#" -eq 0 ] || shift

say() { printf 'build.sh: %s\n' "$*" >&2; }

base=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$top/Dockerfile")
case "$base" in
    debian:12*) suite=bookworm ;;
    *) suite="" ;;
esac

# The first mirror in this machine's apt sources that serves "$suite" itself (not -security or
# -updates): one-line sources.list entries and deb822 .sources files alike.
apt_mirror() {
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$file" ] || continue
        awk -v suite="$1" '
            /^[[:space:]]*deb[[:space:]]/ {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (j = 2; j <= NF; j++) if ($j == suite && uri != "") { print uri; exit } }
            /^[[:space:]]*$/ { uri = "" }
        ' "$file"
    done | head -n 1
}

bootstrap_base() {
    [ -n "$suite" ] || { say "cannot pull $base and do not know how to bootstrap it"; exit 1; }
    mirror=$(apt_mirror "$suite")
    [ -n "$mirror" ] || { say "no apt source for Debian $suite on this machine to bootstrap $base from"; exit 1; }
    say "$base cannot be pulled: bootstrapping Debian $suite from $mirror (once; the image is kept)"
    if command -v mmdebstrap >/dev/null 2>&1; then
        mmdebstrap --quiet --variant=minbase --format=tar "$suite" - "$mirror" |
            docker import --change 'CMD ["bash"]' --message "bootstrapped by rhgen docker/build.sh" - "$base"
    elif command -v debootstrap >/dev/null 2>&1; then
        root=$(mktemp -d)
        trap 'rm -rf "$root"' EXIT
        debootstrap --variant=minbase "$suite" "$root" "$mirror" >/dev/null
        tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$base"
    else
        say "neither mmdebstrap nor debootstrap is installed (apt-get install mmdebstrap)"
        exit 1
    fi
}

if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull -q "$base" >/dev/null 2>&1; then
    bootstrap_base
fi

# The wheelhouse: rhgen's dependencies and what building rhgen needs, never rhgen itself (its
# wheel differs at each build and would defeat the build cache).
wheels="$top/.wheels"
rm -rf "$wheels"
trap 'rm -rf "$wheels"' EXIT
# (pip's notes on find-links folders of this machine's pip configuration that do not exist are noise here)
python3 -m pip wheel --quiet --disable-pip-version-check -w "$wheels" "$top" setuptools wheel 2>&1 |
    grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" >&2 || true
ls "$wheels"/*.whl >/dev/null 2>&1 || { say "pip could not build the wheelhouse"; exit 1; }
rm -f "$wheels"/rhgen-*.whl

set -- --force-rm --tag "$tag" "$@"  # a failed step leaves no intermediate container behind
if [ -n "${SUPERCRONIC_VERSION:-}" ]; then
    set -- --build-arg "SUPERCRONIC_VERSION=$SUPERCRONIC_VERSION" "$@"
fi
docker build "$@" "$top"
