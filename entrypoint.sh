#!/bin/bash
# Container entrypoint of rhgen.
#
#   (no arguments)  generate the first configuration (retrying until the metadata source answers
#                   and haproxy accepts it), run haproxy in master-worker mode in the foreground and
#                   the schedule beside it; every scheduled `rhgen generate` that changes a file
#                   reloads haproxy through rhgen-reload (RELOAD_COMMAND).
#                   RHGEN_MODE=haproxy-only: the haproxy container of the sidekick layout: wait for
#                   a valid configuration in the shared folder, run haproxy, reload whenever one of
#                   the generated files changes (inotifywait, or polling without inotify-tools).
#                   RHGEN_MODE=watch: as the default, with `rhgen watch` (regenerates on every change of
#                   the source, within about a second) in place of the schedule.
#   generate-maps   the sidekick: only the schedule, writing into the shared folder.
#   anything else   run as a command: `rhgen routes`, `bash`.
#
# Paths come from the same environment variables as rhgen (HAPROXY_CONFIG, HAPROXY_BACKEND_CONFIG,
# HAPROXY_DOMAIN_MAP, HAPROXY_SSL_CERT); set them in the environment, not in an RHGEN_CONFIG file,
# so that haproxy and rhgen agree. The schedule is `crontab` beside this script (RHGEN_CRONTAB),
# its expression replaced by RHGEN_SCHEDULE; supercronic runs it, or, where supercronic is
# missing, a plain loop with the same period (or RHGEN_INTERVAL seconds).
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

HAPROXY_BIN=${HAPROXY_BIN:-haproxy}
HAPROXY_CONFIG=${HAPROXY_CONFIG:-/usr/local/etc/haproxy/haproxy.cfg}
HAPROXY_BACKEND_CONFIG=${HAPROXY_BACKEND_CONFIG:-/usr/local/etc/haproxy/backends.cfg}
HAPROXY_DOMAIN_MAP=${HAPROXY_DOMAIN_MAP:-/usr/local/etc/haproxy/domain.map}
HAPROXY_SSL_CERT=${HAPROXY_SSL_CERT:-/usr/local/etc/haproxy/haproxy.pem}
export HAPROXY_MASTER_SOCKET=${HAPROXY_MASTER_SOCKET:-/run/haproxy/master.sock}
RHGEN_CRONTAB=${RHGEN_CRONTAB:-$here/crontab}
RHGEN_SUPERCRONIC=${RHGEN_SUPERCRONIC:-supercronic}
RHGEN_MODE=${RHGEN_MODE:-all}
RHGEN_WATCH=${RHGEN_WATCH:-auto}
RHGEN_POLL_INTERVAL=${RHGEN_POLL_INTERVAL:-1}
RHGEN_RETRY_MAX=${RHGEN_RETRY_MAX:-30}

log() { printf 'entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# --- signals and children --------------------------------------------------------------------

stop_signal=""   # set by the trap; the main loop then shuts down
interrupted=0    # a trapped signal interrupted `wait`
child=""         # gets SIGTERM at once: the job while starting, then the schedule or watcher

# shellcheck disable=SC2329 # called by the traps below
on_signal() {
    interrupted=1
    if [ -z "$stop_signal" ]; then
        stop_signal=$1
        log "received SIG$1, stopping"
    fi
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

# wait for one child; a trapped signal interrupts `wait`, so wait again until it really ended
wait_for() {
    local rc
    while :; do
        interrupted=0
        wait "$1"
        rc=$?
        if [ "$interrupted" = 0 ] || ! kill -0 "$1" 2>/dev/null; then return "$rc"; fi
    done
}

# run a command as a background job and wait for it, so that SIGTERM is handled at once
run() {
    "$@" &
    child=$!
    if [ -n "$stop_signal" ]; then kill -TERM "$child" 2>/dev/null; fi  # a signal before $child was set
    wait_for "$child"
    local rc=$?
    child=""
    return "$rc"
}

pause() {  # an interruptible sleep
    run sleep "$1"
}

# --- haproxy ---------------------------------------------------------------------------------

# shellcheck disable=SC2329 # called through until_success
check_config() {  # haproxy -c on the live files; its complaints go to the log
    local output
    if [ ! -f "$HAPROXY_CONFIG" ] || [ ! -f "$HAPROXY_BACKEND_CONFIG" ]; then
        log "no configuration yet ($HAPROXY_CONFIG, $HAPROXY_BACKEND_CONFIG)"
        return 1
    fi
    if ! output=$(locked "$HAPROXY_BIN" -c -f "$HAPROXY_CONFIG" -f "$HAPROXY_BACKEND_CONFIG" 2>&1); then
        log "haproxy -c rejects $HAPROXY_CONFIG:"
        printf '%s\n' "$output" | grep -E 'ALERT|WARNING' >&2
        return 1
    fi
}

# rhgen takes this lock (apply.LOCK_NAME) while it swaps files; a shared hold on it means the
# files we check and load are a complete set, never half of a swap. "$@" is a program.
locked() {
    local lock
    lock=$(dirname "$HAPROXY_BACKEND_CONFIG")/.rhgen.lock
    if [ -e "$lock" ] && command -v flock >/dev/null 2>&1; then
        flock -s -w 120 "$lock" "$@"
    else
        "$@"
    fi
}

master_answers() {
    printf 'show proc\n' | socat -t 2 -T 5 - "UNIX-CONNECT:$HAPROXY_MASTER_SOCKET" 2>/dev/null | grep -q ' master '
}

start_haproxy() {
    mkdir -p "$(dirname "$HAPROXY_MASTER_SOCKET")"
    # -W master-worker (reloads hand the listening sockets to the new worker), -S the master CLI
    # that rhgen-reload talks to, -db stay in the foreground with logs on stdout.
    "$HAPROXY_BIN" -W -db -S "$HAPROXY_MASTER_SOCKET,mode,600" \
        -f "$HAPROXY_CONFIG" -f "$HAPROXY_BACKEND_CONFIG" &
    haproxy_pid=$!
    local tries=0
    until master_answers; do
        if ! kill -0 "$haproxy_pid" 2>/dev/null; then
            wait_for "$haproxy_pid"
            local rc=$?
            log "haproxy exited with status $rc while starting"
            exit "$rc"
        fi
        tries=$((tries + 1))
        if [ "$tries" -gt 200 ]; then log "haproxy's master socket $HAPROXY_MASTER_SOCKET does not answer"; break; fi
        sleep 0.05
    done
    log "haproxy running (master pid $haproxy_pid, master socket $HAPROXY_MASTER_SOCKET)"
}

# --- the schedule ----------------------------------------------------------------------------

is_true() {
    case "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" in true | yes | 1 | on) return 0 ;; *) return 1 ;; esac
}

warn_default_stats_password() {
    if is_true "${ENABLE_STATS:-false}" && [ "${STATS_PASSWORD-haproxy}" = haproxy ]; then
        log "WARNING: INSECURE: STATS_PASSWORD is still the default 'haproxy': anyone who can reach" \
            "port ${STATS_PORT:-1936} can read the stats page and /metrics; set STATS_PASSWORD"
    fi
}

# The first job line of the crontab: supercronic's syntax, whose expression has 7 fields
# (seconds ... years), 6 (minutes ... years) or 5 (minutes ... weekday), the longest that parses.
crontab_line() {
    grep -vE '^[[:space:]]*(#|$)' "$RHGEN_CRONTAB" | grep -vE '^[[:space:]]*[A-Za-z_][A-Za-z0-9_]*[[:space:]]*=' | head -n 1
}

# How many leading words of "$@" form the cron expression (7, 6 or 5), as supercronic decides.
expression_fields() {
    local count
    for count in 7 6 5; do
        [ "$#" -ge "$count" ] || continue
        if cron_fields_look_valid "$count" "$@"; then echo "$count"; return 0; fi
    done
    return 1
}

cron_fields_look_valid() {
    local count=$1 i=0 word
    shift
    for word in "$@"; do
        i=$((i + 1))
        [ "$i" -le "$count" ] || break
        if [ "$count" -ge 6 ] && [ "$i" -eq "$count" ]; then
            # the years field: numbers only (so a command word is never taken for it)
            printf '%s' "$word" | grep -qE '^[0-9*/,-]+$' || return 1
        else
            printf '%s' "$word" | grep -qE '^([0-9*?/,#LW-]+|[A-Za-z]{3}([,-][A-Za-z]{3})*)$' || return 1
        fi
    done
}

# Seconds between runs of a cron expression that is a plain step: `*/N` (or `*`) in its first
# field (seconds for 7 fields, minutes otherwise) and `*` (or `?`) everywhere else.
period_of() {
    local count=$1 first=$2 unit=60 word
    shift 2
    [ "$count" -eq 7 ] && unit=1
    for word in "$@"; do
        case "$word" in '*' | '?') ;; *) return 1 ;; esac
    done
    case "$first" in
        '*') echo "$unit" ;;
        '*/'*)
            local step=${first#*/}
            case "$step" in '' | *[!0-9]*) return 1 ;; esac
            [ "$step" -gt 0 ] || return 1
            echo $((step * unit))
            ;;
        *) return 1 ;;
    esac
}

# Sets schedule_expression, schedule_command and schedule_period (empty when not derivable).
read_schedule() {
    local line count words
    [ -r "$RHGEN_CRONTAB" ] || die "crontab $RHGEN_CRONTAB is not readable (RHGEN_CRONTAB)"
    line=$(crontab_line)
    [ -n "$line" ] || die "crontab $RHGEN_CRONTAB holds no job line"
    read -r -a words <<<"$line"
    count=$(expression_fields "${words[@]}") || die "crontab $RHGEN_CRONTAB: cannot read a schedule in: $line"
    schedule_expression=${words[*]:0:count}
    schedule_command=${words[*]:count}
    if [ -n "${RHGEN_SCHEDULE:-}" ]; then
        read -r -a words <<<"$RHGEN_SCHEDULE"
        count=$(expression_fields "${words[@]}" rhgen) && [ "$count" -eq "${#words[@]}" ] ||
            die "RHGEN_SCHEDULE '$RHGEN_SCHEDULE' is not a cron expression of 5, 6 or 7 fields"
        schedule_expression=${words[*]}
    fi
    read -r -a words <<<"$schedule_expression"
    schedule_period=$(period_of "${#words[@]}" "${words[@]}") || schedule_period=""
}

# The plain loop used where supercronic is missing: wait out the period (a run just happened
# before the schedule starts), run the job, and again. SIGTERM lets a running job finish, so
# it never leaves a half-done run behind.
schedule_loop() {
    local period=$1 job="" nap="" stop=0 started elapsed rest
    trap 'stop=1; if [ -n "$nap" ]; then kill "$nap" 2>/dev/null; fi' TERM
    trap '' INT
    started=$(date +%s%N)
    while :; do
        elapsed=$(($(date +%s%N) - started))
        rest=$((period * 1000000000 - elapsed))
        if [ "$rest" -gt 0 ]; then
            sleep "$((rest / 1000000000)).$(printf '%09d' $((rest % 1000000000)))" &
            nap=$!
            if [ "$stop" = 1 ]; then kill "$nap" 2>/dev/null; fi  # a signal before $nap was set
            wait "$nap"
            nap=""
        fi
        [ "$stop" = 0 ] || break
        started=$(date +%s%N)
        sh -c "$schedule_command" &
        job=$!
        while :; do
            wait "$job"
            kill -0 "$job" 2>/dev/null || break
        done
        [ "$stop" = 0 ] || break
    done
    wait  # the killed nap
    exit 0
}

# Decides how the schedule runs (before anything starts, so a bad schedule stops nothing):
# supercronic with the crontab, or the plain loop with loop_period seconds.
plan_schedule() {
    read_schedule
    loop_period=""
    if command -v "$RHGEN_SUPERCRONIC" >/dev/null 2>&1 && [ -z "${RHGEN_INTERVAL:-}" ]; then
        return 0
    fi
    loop_period=${RHGEN_INTERVAL:-$schedule_period}
    case "$loop_period" in
        '') die "cannot derive a period from the schedule '$schedule_expression'; set RHGEN_INTERVAL (seconds) or install supercronic" ;;
        *[!0-9]* | 0) die "RHGEN_INTERVAL '$loop_period' is not a whole number of seconds above 0" ;;
    esac
}

start_schedule() {
    if [ -z "$loop_period" ]; then
        local tab=$RHGEN_CRONTAB
        if [ -n "${RHGEN_SCHEDULE:-}" ]; then
            tab=$(mktemp "${TMPDIR:-/tmp}/rhgen-crontab.XXXXXX")
            printf '%s %s\n' "$schedule_expression" "$schedule_command" >"$tab"
        fi
        log "schedule: supercronic runs '$schedule_command' at '$schedule_expression'"
        "$RHGEN_SUPERCRONIC" -quiet -passthrough-logs "$tab" &
    else
        if ! command -v "$RHGEN_SUPERCRONIC" >/dev/null 2>&1; then
            log "supercronic not found: running '$schedule_command' every $loop_period s in a plain loop"
        else
            log "RHGEN_INTERVAL is set: running '$schedule_command' every $loop_period s in a plain loop"
        fi
        schedule_loop "$loop_period" &
    fi
    helper_pid=$!
}

# --- the file watcher (haproxy-only mode) ----------------------------------------------------

watched_files() {  # rhgen rewrites .rhgen.generation after every swap, whichever files haproxy loads changed
    printf '%s\n' "$HAPROXY_CONFIG" "$HAPROXY_BACKEND_CONFIG" "$HAPROXY_DOMAIN_MAP" "$HAPROXY_SSL_CERT" \
        "$(dirname "$HAPROXY_BACKEND_CONFIG")/.rhgen.generation"
}

fingerprint() {  # one line per generated file: its checksum, or "missing"
    local file
    while IFS= read -r file; do
        if [ -r "$file" ]; then cksum <"$file"; else echo missing; fi
    done < <(watched_files)
}

reload_checked() {  # the files are read and checked under rhgen's lock, then haproxy reloads
    locked "$here/rhgen-reload"
}

# Reload when the files differ from those last tried; a rejected set is not retried until it
# changes again (the running worker keeps serving the previous configuration meanwhile).
maybe_reload() {
    local now
    now=$(fingerprint)
    [ "$now" != "$last_fingerprint" ] || return 0
    last_fingerprint=$now
    if reload_checked; then
        log "files changed: haproxy reloaded"
    else
        log "files changed, but the reload failed: haproxy keeps serving the previous configuration"
    fi
}

watch_loop() {
    local stop=0 watcher="" path fd dirs=() use_inotify=0
    # SIGTERM: end the current wait; a reload under way finishes first.
    trap 'stop=1; if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null; fi' TERM
    trap '' INT
    case "$RHGEN_WATCH" in
        inotify) use_inotify=1 ;;
        poll) ;;
        auto) if command -v inotifywait >/dev/null 2>&1; then use_inotify=1; fi ;;
        *) log "RHGEN_WATCH '$RHGEN_WATCH' is not auto, inotify or poll; polling" ;;
    esac
    if [ "$use_inotify" = 1 ]; then
        # Watch the folders, not the files: rhgen replaces files by renaming new ones over them.
        while IFS= read -r path; do
            path=$(dirname "$path")
            if [ -d "$path" ] && [[ ! " ${dirs[*]-} " == *" $path "* ]]; then dirs+=("$path"); fi
        done < <(watched_files)
        # Its stderr too: "Watches established." says from when on no change is missed.
        coproc INOTIFY { exec inotifywait -m -e close_write -e moved_to -e create -e delete -e attrib \
            --format '%w%f' "${dirs[@]}" 2>&1; }
        watcher=$INOTIFY_PID
        fd=${INOTIFY[0]}
        if [ "$stop" = 1 ]; then kill "$watcher" 2>/dev/null; fi  # a signal before $watcher was set
        local established=0
        while IFS= read -r -u "$fd" path; do
            if [ "$path" = "Watches established." ]; then established=1; break; fi
            [ "$path" = "Setting up watches." ] || log "inotifywait: $path"
        done
        if [ "$established" = 1 ] && [ "$stop" = 0 ]; then
            log "watching ${dirs[*]} with inotifywait"
            maybe_reload  # a change since haproxy started, before the watches were there
        fi
        while [ "$established" = 1 ] && [ "$stop" = 0 ]; do
            # A quiet minute still compares the files, should an event ever go missing.
            if IFS= read -r -t 60 -u "$fd" path; then
                watched_files | grep -qxF "$path" || continue
                # let a burst of changes (rhgen swaps several files) settle first
                while IFS= read -r -t 0.3 -u "$fd" path; do :; done
            elif [ "$?" -le 128 ]; then
                break  # inotifywait ended
            fi
            [ "$stop" = 0 ] || break
            maybe_reload
        done
        kill "$watcher" 2>/dev/null
        wait "$watcher" 2>/dev/null
        [ "$stop" = 0 ] || exit 0
        log "inotifywait stopped; polling every $RHGEN_POLL_INTERVAL s instead"
    else
        log "polling the generated files every $RHGEN_POLL_INTERVAL s"
    fi
    while [ "$stop" = 0 ]; do
        sleep "$RHGEN_POLL_INTERVAL" &
        watcher=$!
        if [ "$stop" = 1 ]; then kill "$watcher" 2>/dev/null; fi
        wait "$watcher"
        [ "$stop" = 0 ] || break
        maybe_reload
    done
    wait "$watcher" 2>/dev/null
    exit 0
}

start_watcher() {
    watch_loop &
    helper_pid=$!
}

# --- the modes -------------------------------------------------------------------------------

# Retry with backoff (1, 2, 4 ... RHGEN_RETRY_MAX seconds) until "$@" succeeds; exit 2 ends it.
until_success() {
    local delay=1 rc
    while :; do
        "$@"
        rc=$?
        [ -z "$stop_signal" ] || exit 0
        [ "$rc" -ne 0 ] || return 0
        [ "$rc" -ne 2 ] || die "a setting is wrong (see above); not retrying"
        log "no valid configuration yet; retrying in $delay s"
        pause "$delay"
        [ -z "$stop_signal" ] || exit 0
        delay=$((delay * 2))
        [ "$delay" -le "$RHGEN_RETRY_MAX" ] || delay=$RHGEN_RETRY_MAX
    done
}

# shellcheck disable=SC2329 # called through until_success
first_generate() {  # nothing to reload yet: haproxy starts after this
    RELOAD_COMMAND="" run rhgen generate || return
    check_config
}

# Serve: haproxy in the foreground, the helper (schedule or watcher) beside it, until a signal
# or until either exits; then stop both and report.
serve() {
    local rc ended
    child=$helper_pid
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

# SIGTERM to the schedule or watcher, which finishes its current run; again every second, since
# a signal that reaches a just-forked helper before it has set its trap is lost.
stop_helper() {
    local timer
    [ -n "${helper_pid:-}" ] || return 0
    while kill -TERM "$helper_pid" 2>/dev/null; do
        sleep 1 &
        timer=$!
        wait -n "$helper_pid" "$timer" 2>/dev/null
        kill "$timer" 2>/dev/null
        wait "$timer" 2>/dev/null
    done
    wait "$helper_pid" 2>/dev/null
}

mode_all() {
    warn_default_stats_password
    export RELOAD_COMMAND=${RELOAD_COMMAND:-$(printf '%q' "$here/rhgen-reload")}
    plan_schedule
    until_success first_generate
    start_haproxy
    start_schedule
    serve
}

# RHGEN_MODE=watch: as `all`, but `rhgen watch` (triggered by change, ~0.5 s) instead of the schedule.
mode_watch() {
    warn_default_stats_password
    export RELOAD_COMMAND=${RELOAD_COMMAND:-$(printf '%q' "$here/rhgen-reload")}
    until_success first_generate
    start_haproxy
    log "watch: rhgen watch regenerates on every change of the source"
    rhgen watch &
    helper_pid=$!
    serve
}

mode_haproxy_only() {
    warn_default_stats_password
    # The sidekick writes the files; start once they form a configuration haproxy accepts.
    until_success check_config
    last_fingerprint=$(fingerprint)
    start_haproxy
    start_watcher
    serve
}

mode_generate_maps() {
    plan_schedule
    log "generate-maps: writing $HAPROXY_CONFIG, $HAPROXY_BACKEND_CONFIG, $HAPROXY_DOMAIN_MAP for the haproxy container"
    run rhgen generate
    [ "$?" -ne 2 ] || die "a setting is wrong (see above)"
    [ -z "$stop_signal" ] || exit 0
    start_schedule
    child=$helper_pid
    while [ -z "$stop_signal" ] && kill -0 "$helper_pid" 2>/dev/null; do
        wait -n "$helper_pid"
    done
    if [ -n "$stop_signal" ]; then
        stop_helper
        exit 0
    fi
    log "the schedule stopped unexpectedly"
    exit 1
}

if [ "$#" -gt 0 ] && [ "$1" != generate-maps ]; then
    exec "$@"
fi
if [ "$#" -gt 0 ]; then
    mode_generate_maps
fi
case "$RHGEN_MODE" in
    all) mode_all ;;
    watch) mode_watch ;;
    haproxy-only) mode_haproxy_only ;;
    *) die "RHGEN_MODE '$RHGEN_MODE' is not all, watch or haproxy-only" ;;
esac
