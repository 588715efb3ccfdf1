# Shared by start_server.sh and start_shop.sh (sourced, not run).

stop_pid() {  # SIGTERM the process group started by a script, SIGKILL after 20 s
    local pid
    pid=$(cat "$1")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 1 40); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 -- "-$pid" 2>/dev/null; then
            echo "still running after 20 s: SIGKILL process group $pid" >&2
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        echo "stopped process group $pid"
    else
        echo "not running (stale $1)"
    fi
    rm -f "$1"
}

stop_if_asked() {  # --stop: stop what the pid file names, then exit
    if [[ $1 -eq 1 ]]; then
        [[ -f "$2" ]] || { echo "no $2: nothing to stop"; exit 0; }
        stop_pid "$2"
        exit 0
    fi
}
