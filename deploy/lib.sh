# Shared by the deploy scripts (sourced, not run).

# Files and directories the scripts create are private to their owner (600 / 700): keys, the
# SuperLink database, logs, the shops' state. Processes they start inherit the mask, so the
# ServerApp's out-dir and checkpoint and the ClientApps' state files are private too.
umask 077

private_dir() {  # mkdir -p DIR and make it 700 (also when it already existed)
    mkdir -p "$1"
    chmod 700 "$1"
}

descendants() {  # every live descendant pid of $1 (through parent links, any depth)
    ps -e -o pid=,ppid= 2>/dev/null | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            for (p in parent) {
                q = parent[p]
                for (n = 0; q > 1 && n < 64; n++) {
                    if (q == root) { print p; break }
                    q = parent[q]
                }
            }
        }'
}

alive_of() {  # live (non-zombie) pids among $1 (pids) or in the groups $2 (pgids); prints them
    ps -e -o pid=,pgid=,stat= 2>/dev/null | awk -v pids=" $1 " -v groups=" $2 " '
        $3 !~ /^Z/ && (index(pids, " " $1 " ") || index(groups, " " $2 " ")) { print $1 }'
}

stop_pid() {  # stop the process group a script started (its pid is the group id), and every
    # process that left the group (flower-superlink starts flower-superexec in a session of
    # its own): SIGTERM, wait up to STOP_GRACE_S (20) s for all of them, SIGKILL what is left
    # and wait (bounded, 10 s) until it is gone.
    local pid grace=${STOP_GRACE_S:-20} pids groups p g left
    pid=$(cat "$1")
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "not running (stale $1)"
        rm -f "$1"
        return 0
    fi
    pids="$pid $(descendants "$pid" | tr '\n' ' ')"
    groups="$pid"
    for p in $pids; do  # groups led by one of ours (superexec's and its ServerApps')
        g=$(ps -o pgid= -p "$p" 2>/dev/null | tr -d ' ')
        [[ -n "$g" && " $pids " == *" $g "* && " $groups " != *" $g "* ]] && groups="$groups $g"
    done
    # Each process gets one SIGTERM (a second one cuts a SuperNode's clean exit short: it
    # would not leave the federation, and its restart would be refused for a minute).
    for g in $groups; do kill -TERM -- "-$g" 2>/dev/null || true; done
    for p in $pids; do
        g=$(ps -o pgid= -p "$p" 2>/dev/null | tr -d ' ')
        [[ -z "$g" || " $groups " == *" $g "* ]] || kill -TERM "$p" 2>/dev/null || true
    done
    for _ in $(seq 1 $((grace * 2))); do
        [[ -z "$(alive_of "$pids" "$groups")" ]] && break
        sleep 0.5
    done
    left=$(alive_of "$pids" "$groups" | tr '\n' ' ')
    if [[ -n "$left" ]]; then
        echo "still running after $grace s: SIGKILL $left" >&2
        for g in $groups; do kill -KILL -- "-$g" 2>/dev/null || true; done
        for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
        for _ in $(seq 1 20); do
            [[ -z "$(alive_of "$pids" "$groups")" ]] && break
            sleep 0.5
        done
        left=$(alive_of "$pids" "$groups" | tr '\n' ' ')
        [[ -z "$left" ]] || echo "WARNING: still alive after SIGKILL: $left" >&2
    fi
    echo "stopped process group $pid${groups#"$pid"}"
    rm -f "$1"
}

stop_if_asked() {  # --stop: stop what the pid files name (in order), then exit
    local stop=$1 f found=0
    shift
    if [[ $stop -eq 1 ]]; then
        for f in "$@"; do
            [[ -f "$f" ]] || continue
            found=1
            stop_pid "$f"
        done
        [[ $found -eq 1 ]] || echo "no $*: nothing to stop"
        exit 0
    fi
}
