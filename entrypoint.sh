#!/bin/bash
# Container entrypoint of rhgen: starts processes, forwards signals, reaps. Whatever holds logic
# (checks, reloads, backoff, the file watch, the paths) is an rhgen command with tests.
#
#   (no arguments)  `rhgen prepare` (the first configuration, retried until haproxy accepts it),
#                   then haproxy (`rhgen run-haproxy`, master-worker, foreground) and the schedule
#                   beside it: supercronic with the crontab beside this script (RHGEN_CRONTAB;
#                   RHGEN_SCHEDULE replaces its expression), else `rhgen schedule`, a plain loop.
#                   RHGEN_MODE=watch: `rhgen watch` (on every change of the source) for the schedule.
#                   RHGEN_MODE=haproxy-only (the sidekick layout's haproxy): `rhgen check --wait`,
#                   haproxy, and `rhgen watch-files`, which reloads it when the files change.
#   generate-maps   the sidekick: `rhgen generate`, then only the schedule.
#   anything else   run as a command: `rhgen routes`, `bash`.
#
# On SIGTERM or SIGINT: the schedule (or watcher) finishes its current run, haproxy soft-stops
# (open connections finish, bounded by hard-stop-after), and the exit status is haproxy's.
set -u

here=$(cd "$(dirname "$0")" && pwd)

# Started as root (the image's default): drop to the unprivileged user rhgen at once, with the
# group of a mounted Docker socket as its only extra group, so `-v /var/run/docker.sock:...`
# needs no --user or --group-add. haproxy binds 80 and 443 through its file capability.
RHGEN_USER=${RHGEN_USER:-rhgen}
if [ "$(id -u)" = 0 ] && [ "$RHGEN_USER" != root ] && id "$RHGEN_USER" >/dev/null 2>&1; then
    groups=--clear-groups
    docker_socket=${DOCKER_HOST:-unix:///var/run/docker.sock}
    docker_socket=${docker_socket#unix://}
    if [ -S "$docker_socket" ]; then groups=--groups=$(stat -c %g "$docker_socket"); fi
    exec setpriv --reuid="$RHGEN_USER" --regid="$RHGEN_USER" "$groups" --inh-caps=-all -- "$0" "$@"
fi

RHGEN_CRONTAB=${RHGEN_CRONTAB:-$here/crontab}
RHGEN_SUPERCRONIC=${RHGEN_SUPERCRONIC:-supercronic}

log() { printf 'entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

stop_signal=""  # set by the trap; the main loop then shuts down
child=""        # gets SIGTERM at once: the job while starting, then the schedule or watcher
on_signal() {   # shellcheck disable=SC2329 # called by the traps
    [ -n "$stop_signal" ] || { stop_signal=$1; log "received SIG$1, stopping"; }
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

wait_for() {  # a trapped signal interrupts `wait`: wait again until the child really ended
    local rc
    while :; do
        wait "$1"
        rc=$?
        kill -0 "$1" 2>/dev/null || return "$rc"
    done
}

run() {  # a job in the background, so that SIGTERM reaches it at once; a settings error stops all
    "$@" &
    child=$!
    if [ -n "$stop_signal" ]; then kill -TERM "$child" 2>/dev/null; fi  # a signal before $child was set
    wait_for "$child"
    local rc=$?
    child=""
    [ -z "$stop_signal" ] || exit 0
    [ "$rc" -ne 2 ] || die "a setting is wrong (see above); not retrying"
    return "$rc"
}

plan_schedule() {  # supercronic checks its crontab before anything starts
    if ! command -v "$RHGEN_SUPERCRONIC" >/dev/null 2>&1; then
        log "supercronic not found: the schedule is rhgen schedule, a plain loop (RHGEN_INTERVAL)"
        schedule=(rhgen schedule)
        return
    fi
    local tab=$RHGEN_CRONTAB
    if [ -n "${RHGEN_SCHEDULE:-}" ]; then
        tab=$(mktemp "${TMPDIR:-/tmp}/rhgen-crontab.XXXXXX")
        printf '%s rhgen generate\n' "$RHGEN_SCHEDULE" >"$tab"
    fi
    "$RHGEN_SUPERCRONIC" -test "$tab" >&2 || die "supercronic cannot read the schedule in $tab (RHGEN_SCHEDULE, RHGEN_CRONTAB)"
    log "schedule: supercronic runs $tab"
    schedule=("$RHGEN_SUPERCRONIC" -quiet -passthrough-logs "$tab")
}

stop_helper() {  # SIGTERM again every second: one that reaches a just-forked helper may be lost
    local timer
    while kill -TERM "$helper_pid" 2>/dev/null; do
        sleep 1 &
        timer=$!
        wait -n "$helper_pid" "$timer" 2>/dev/null
        kill "$timer" 2>/dev/null
        wait "$timer" 2>/dev/null
    done
    wait "$helper_pid" 2>/dev/null
}

# haproxy in the foreground, the helper beside it, until a signal or until either exits.
serve() {
    local rc ended
    rhgen run-haproxy &
    haproxy_pid=$!
    "$@" &
    helper_pid=$!
    child=$helper_pid
    log "haproxy running (master pid $haproxy_pid) beside $*"
    while [ -z "$stop_signal" ]; do
        ended=""
        wait -n -p ended "$haproxy_pid" "$helper_pid"
        rc=$?
        [ -z "$stop_signal" ] || break
        if [ "$ended" = "$haproxy_pid" ]; then
            log "haproxy exited with status $rc; stopping"
            stop_helper
            exit "$((rc == 0 ? 1 : rc))"
        fi
        if [ "$ended" = "$helper_pid" ]; then
            log "the schedule/watcher stopped unexpectedly (status $rc); stopping haproxy"
            break
        fi
    done
    stop_helper
    log "stopping haproxy gracefully (soft-stop; open connections may take up to hard-stop-after)"
    kill -USR1 "$haproxy_pid" 2>/dev/null
    wait_for "$haproxy_pid"
    rc=$?
    log "haproxy exited with status $rc"
    if [ -z "$stop_signal" ] && [ "$rc" -eq 0 ]; then rc=1; fi
    exit "$rc"
}

if [ "$#" -gt 0 ] && [ "$1" != generate-maps ]; then exec "$@"; fi
if [ "$#" -gt 0 ]; then  # generate-maps: the sidekick
    plan_schedule
    log "generate-maps: writing the configuration for the haproxy container"
    run rhgen generate
    "${schedule[@]}" &
    helper_pid=$!
    child=$helper_pid
    while [ -z "$stop_signal" ] && kill -0 "$helper_pid" 2>/dev/null; do wait -n "$helper_pid"; done
    [ -n "$stop_signal" ] || { log "the schedule stopped unexpectedly"; exit 1; }
    stop_helper
    exit 0
fi
export RELOAD_COMMAND=${RELOAD_COMMAND:-rhgen reload}  # a run that changes a file reloads haproxy
case "${RHGEN_MODE:-all}" in
    all) plan_schedule && run rhgen prepare && serve "${schedule[@]}" ;;
    watch) run rhgen prepare && serve rhgen watch ;;
    haproxy-only) run rhgen check --wait && serve rhgen watch-files ;;
    *) die "RHGEN_MODE '${RHGEN_MODE:-}' is not all, watch or haproxy-only" ;;
esac
