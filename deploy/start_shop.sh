#!/usr/bin/env bash
# Partner shop: start this shop's fedcl SuperNode (Flower 1.42), connected with TLS and
# authenticated with the shop's private key.
#
#   deploy/start_shop.sh --shop NAME [options]         start in the background
#   deploy/start_shop.sh --shop NAME --stop [--dir D]  stop it (SIGTERM)
#
# Options (defaults in brackets):
#   --shop NAME        the shop's name in the data, e.g. Germany or shop_00 (required)
#   --superlink H:P    the operator's Fleet gateway (start_server.sh --host/--port)
#                      [127.0.0.1:8000]
#   --ca FILE          the operator's CA certificate [./fedcl-deploy/certs/ca.crt]
#   --key FILE         this shop's private key (deploy/make_node_key.sh)
#                      [./fedcl-deploy/keys/NAME]
#   --state-dir DIR    the shop's learning state (embeddings, replay buffer, optimiser;
#                      with --events also the ingest watermark, private user map, events
#                      table and local quarantine); keep it across restarts
#                      [./fedcl-deploy/shops/NAME/state]
#   --events FILE      the shop's own event log (CSV or Parquet: user_id, item_id,
#                      timestamp[, shop]); append-only, read up to what is new at each
#                      message. Needs --plan. Without both: the run's data (simulation way)
#   --plan DIR         the operator's public plan (python -m fedcl.plan: windows.parquet,
#                      catalog.parquet, plan.json)
#   --port PORT        local port of the SuperNode's ClientApp runtime; one per SuperNode
#                      on a machine [9094]
#   --dir DIR          supernode.pid and supernode.log [./fedcl-deploy/shops/NAME]
#   --cache DIR        FEDCL_CACHE: the shop's prepared data [$FEDCL_CACHE or ~/.cache/fedcl]
#   --wait S           seconds to wait until the SuperLink accepts the node [30]
#   --trusted-entities FILE
#                      run only app bundles signed by these keys (YAML: {fpk_ID: 'ssh-ed25519
#                      ...'}). Flower 1.42 verifies only signatures made through Flower Hub:
#                      a bundle submitted with `flwr run .` (fedcl's, too) is refused.
#                      Not for fedcl runs yet (OPERATOR_GUIDE.md, threat model) [off]
#
# Everything it creates is private (umask 077: files 600, directories 700), also what the
# SuperNode's ClientApps write (they inherit the mask).
# Activate the venv that has fedcl + flwr installed first (flower-supernode must be on PATH).
set -euo pipefail

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # umask 077, stop_pid

shop=""
superlink=127.0.0.1:8000
ca=./fedcl-deploy/certs/ca.crt
key=""
state_dir=""
events=""
plan=""
port=9094
dir=""
cache="${FEDCL_CACHE:-}"
wait_s=30
trusted=""
stop=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --shop) shop="$2"; shift 2 ;;
        --superlink) superlink="$2"; shift 2 ;;
        --ca) ca="$2"; shift 2 ;;
        --key) key="$2"; shift 2 ;;
        --state-dir) state_dir="$2"; shift 2 ;;
        --events) events="$2"; shift 2 ;;
        --plan) plan="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --cache) cache="$2"; shift 2 ;;
        --wait) wait_s="$2"; shift 2 ;;
        --trusted-entities) trusted="$2"; shift 2 ;;
        --stop) stop=1; shift ;;
        *) echo "start_shop.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$shop" ]] || { echo "start_shop.sh: --shop NAME is required (see --help)" >&2; exit 2; }
if [[ "$shop" == *'"'* || "$events" == *'"'* || "$plan" == *'"'* ]]; then
    echo "start_shop.sh: shop name and paths must not contain quotes" >&2
    exit 2
fi
if [[ -n "$events" && -z "$plan" ]] || [[ -z "$events" && -n "$plan" ]]; then
    echo "start_shop.sh: --events FILE and --plan DIR go together (see --help)" >&2
    exit 2
fi
safe=$(printf '%s' "$shop" | tr -c 'A-Za-z0-9_.-' '_')
dir="${dir:-./fedcl-deploy/shops/$safe}"
key="${key:-./fedcl-deploy/keys/$safe}"
state_dir="${state_dir:-$dir/state}"

private_dir "$dir"
dir=$(cd "$dir" && pwd)
pidfile="$dir/supernode.pid"
logfile="$dir/supernode.log"

stop_if_asked "$stop" "$pidfile"

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "shop $shop already runs a SuperNode (pid $(cat "$pidfile")); --stop it first" >&2
    exit 1
fi
[[ -f "$ca" ]] || { echo "missing CA certificate $ca (from the operator; --ca)" >&2; exit 1; }
[[ -f "$key" ]] || {
    echo "missing private key $key: deploy/make_node_key.sh $safe $(dirname "$key")" >&2
    exit 1
}
command -v flower-supernode >/dev/null || {
    echo "flower-supernode not on PATH: activate the fedcl venv" >&2
    exit 1
}
trust_args=()
if [[ -n "$trusted" ]]; then
    [[ -f "$trusted" ]] || { echo "missing $trusted (--trusted-entities)" >&2; exit 1; }
    trust_args=(--trusted-entities "$(cd "$(dirname "$trusted")" && pwd)/$(basename "$trusted")")
fi
own_log=""
if [[ -n "$events" ]]; then
    [[ -f "$events" ]] || { echo "missing event log $events (--events)" >&2; exit 1; }
    [[ -f "$plan/plan.json" ]] || {
        echo "missing plan $plan/plan.json (--plan; the operator's python -m fedcl.plan)" >&2
        exit 1
    }
    events=$(cd "$(dirname "$events")" && pwd)/$(basename "$events")
    plan=$(cd "$plan" && pwd)
    own_log=" events=\"$events\" plan=\"$plan\""
fi
private_dir "$state_dir"
state_dir=$(cd "$state_dir" && pwd)
ca=$(cd "$(dirname "$ca")" && pwd)/$(basename "$ca")
key=$(cd "$(dirname "$key")" && pwd)/$(basename "$key")
if [[ -n "$cache" ]]; then
    private_dir "$cache"
    export FEDCL_CACHE
    FEDCL_CACHE=$(cd "$cache" && pwd)
fi

export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
# A new session (setsid): the SuperNode, its flower-superexec and the flwr-clientapp
# processes share one process group, so --stop (kill -- -PID) ends them all.
setsid flower-supernode \
    --superlink "$superlink" \
    --root-certificates "$ca" \
    --auth-supernode-private-key "$key" \
    --node-config "shop=\"$shop\" state-dir=\"$state_dir\"$own_log" \
    --port "$port" \
    "${trust_args[@]}" \
    >"$logfile" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

for _ in $(seq 1 $((wait_s * 2))); do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pidfile"
        if grep -q "Exit Code: 305" "$logfile"; then
            echo "the SuperLink refused shop $shop (Flower exit code 305): is its public key" \
                "registered (flwr supernode register $key.pub <connection>)? Is $superlink" \
                "reachable, and is $ca the operator's CA? If this shop's SuperNode ended" \
                "abnormally (killed, crashed, machine lost) within the last minute or two, the" \
                "SuperLink still counts it online until its heartbeats lapse: start it again" \
                "in a minute." >&2
        else
            echo "SuperNode exited; last lines of $logfile:" >&2
            tail -n 20 "$logfile" >&2
        fi
        exit 1
    fi
    if grep -q "SuperNode ID:" "$logfile"; then
        node_id=$(grep -o "SuperNode ID: [0-9]*" "$logfile" | head -n 1)
        echo "shop $shop connected to $superlink ($node_id), pid $pid"
        echo "state dir: $state_dir"
        [[ -z "$events" ]] || echo "event log: $events   plan: $plan"
        echo "log: $logfile   stop: deploy/start_shop.sh --shop $shop --stop --dir $dir"
        exit 0
    fi
    sleep 0.5
done
echo "shop $shop: no confirmation from the SuperLink after $wait_s s (still retrying;" \
    "pid $pid, log $logfile)" >&2
exit 1
