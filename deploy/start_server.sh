#!/usr/bin/env bash
# Operator: start the fedcl SuperLink (Flower 1.42) with TLS and SuperNode authentication.
#
#   deploy/start_server.sh [options]          start in the background, wait for /health
#   deploy/start_server.sh --stop [--dir D]   stop the SuperLink started from D (SIGTERM)
#
# Options (defaults in brackets):
#   --certs DIR      ca.crt, server.pem, server.key from deploy/make_certs.sh [./fedcl-deploy/certs]
#   --host HOST      address to listen on; 0.0.0.0 for shops on other machines [127.0.0.1]
#   --port PORT      one port for the Fleet, Control and Runtime APIs [8000]
#   --dir DIR        superlink.pid, superlink.log, superlink.db go here [./fedcl-deploy/superlink]
#   --database PATH  SuperLink state (registered nodes, runs); ":memory:" forgets them
#                    on restart [DIR/superlink.db]
#   --timeout S      seconds to wait for /health [60]
#
# Activate the venv that has fedcl + flwr installed first (flower-superlink must be on PATH).
# Runtime installation of app dependencies is disabled (FLWR_DISABLE_RUNTIME_DEPENDENCY_
# INSTALLATION=1): every machine must already have fedcl's dependencies installed.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

certs=./fedcl-deploy/certs
host=127.0.0.1
port=8000
dir=./fedcl-deploy/superlink
database=""
timeout=60
stop=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --certs) certs="$2"; shift 2 ;;
        --host) host="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --database) database="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --stop) stop=1; shift ;;
        *) echo "start_server.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile="$dir/superlink.pid"
logfile="$dir/superlink.log"

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stop_if_asked "$stop" "$pidfile"

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "a SuperLink from $dir is already running (pid $(cat "$pidfile")); --stop it first" >&2
    exit 1
fi
for f in ca.crt server.pem server.key; do
    [[ -f "$certs/$f" ]] || {
        echo "missing $certs/$f: run deploy/make_certs.sh $certs (or pass --certs)" >&2
        exit 1
    }
done
certs=$(cd "$certs" && pwd)
command -v flower-superlink >/dev/null || {
    echo "flower-superlink not on PATH: activate the fedcl venv" >&2
    exit 1
}
database="${database:-$dir/superlink.db}"

export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
# A new session (setsid): the SuperLink and its flower-superexec child share one process
# group, so --stop (kill -- -PID) ends both.
setsid flower-superlink \
    --ssl-ca-certfile "$certs/ca.crt" \
    --ssl-certfile "$certs/server.pem" \
    --ssl-keyfile "$certs/server.key" \
    --enable-supernode-auth \
    --disable-runtime-dependency-installation \
    --database "$database" \
    --host "$host" --port "$port" \
    >"$logfile" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

probe=$host
[[ "$host" == "0.0.0.0" || "$host" == "::" ]] && probe=127.0.0.1
[[ "$probe" == *:* ]] && probe="[$probe]"
url="https://$probe:$port/health"
ok=0
for _ in $(seq 1 $((timeout * 2))); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "SuperLink exited; last lines of $logfile:" >&2
        tail -n 20 "$logfile" >&2
        rm -f "$pidfile"
        exit 1
    fi
    if curl -fsS --cacert "$certs/ca.crt" "$url" -o /dev/null 2>/dev/null; then
        ok=1
        break
    fi
    sleep 0.5
done
if [[ $ok -ne 1 ]]; then
    echo "no answer from $url after $timeout s; log: $logfile" >&2
    stop_pid "$pidfile" >&2
    exit 1
fi

cat <<MSG
SuperLink up: pid $pid, $url answers (log $logfile, pid file $pidfile)

Next steps (operator):
1. A connection in \$FLWR_HOME/config.toml (default ~/.flwr/config.toml):

   [superlink]
   default = "fedcl"

   [superlink.fedcl]
   address = "$probe:$port"
   root-certificates = "$certs/ca.crt"

2. Register each shop's public key (made at the shop by deploy/make_node_key.sh):
   flwr supernode register shop_00.pub fedcl --name shop_00
   flwr supernode ls fedcl                   # status registered -> online once it connects

3. Publish the plan (window bounds, product catalogue; no customer data):
   python -m fedcl.plan --out ./fedcl-deploy/plan data=online_retail

4. Send ca.crt (never ca.key) and the plan directory to the shops; each starts
   deploy/start_shop.sh --events ITS_LOG --plan PLAN_DIR (deploy/SHOP_GUIDE.md).

5. Submit a run from the fedcl checkout (the app bundle is built from it):
   flwr run . fedcl --run-config 'overrides="federated.plan_dir=/abs/fedcl-deploy/plan federated.min_shops=3" out-dir="/abs/run-dir"' --format json
   flwr ls fedcl --run-id RUN_ID             # until finished:completed
   flwr log RUN_ID fedcl --show              # the ServerApp's log
   The same command with the same out-dir resumes a stopped run (flwr stop RUN_ID fedcl).

Stop: deploy/start_server.sh --stop --dir $dir
MSG
