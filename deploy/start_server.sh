#!/usr/bin/env bash
# Operator: start the fedcl SuperLink (Flower 1.42) with TLS and SuperNode authentication,
# behind a Fleet gateway (nginx) that is the only thing shops (and anyone else) can reach.
#
#   deploy/start_server.sh [options]          start both in the background, wait for /health
#   deploy/start_server.sh --stop [--dir D]   stop the gateway and the SuperLink started from D
#
# Flower 1.42 serves the Fleet API (shops), the Control API (`flwr run`, `flwr supernode
# register`: no credential in open-source Flower) and the Runtime API (ServerApp) on ONE port.
# So the SuperLink listens on loopback only (127.0.0.1:CONTROL_PORT: the operator's `flwr`
# commands on this machine), and the gateway on HOST:PORT forwards only `POST /v1/fleet/*`
# (and `GET /health`) to it, with TLS on both legs; every other path answers 404.
#
# Options (defaults in brackets):
#   --certs DIR         ca.crt, server.pem, server.key from deploy/make_certs.sh
#                       [./fedcl-deploy/certs]
#   --host HOST         the gateway's address (what shops reach); 0.0.0.0 for shops on other
#                       machines [127.0.0.1]
#   --port PORT         the gateway's port (Fleet API only) [8000]
#   --control-port P    the SuperLink's own port on 127.0.0.1 (Control + Runtime + Fleet API;
#                       the operator's `flwr` connection) [9093]
#   --dir DIR           pid files, logs, superlink.db, gateway config [./fedcl-deploy/superlink]
#   --database PATH     SuperLink state (registered nodes, runs); ":memory:" forgets them
#                       on restart [DIR/superlink.db]
#   --nginx PATH        the nginx binary [nginx on PATH, else /usr/sbin/nginx]
#   --timeout S         seconds to wait for /health [60]
#
# Everything it creates is private (umask 077: files 600, directories 700).
# Activate the venv that has fedcl + flwr installed first (flower-superlink must be on PATH).
# Runtime installation of app dependencies is disabled (FLWR_DISABLE_RUNTIME_DEPENDENCY_
# INSTALLATION=1): every machine must already have fedcl's dependencies installed.
set -euo pipefail

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # umask 077, stop_pid

certs=./fedcl-deploy/certs
host=127.0.0.1
port=8000
control_port=9093
dir=./fedcl-deploy/superlink
database=""
nginx=""
timeout=60
stop=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --certs) certs="$2"; shift 2 ;;
        --host) host="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --control-port) control_port="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --database) database="$2"; shift 2 ;;
        --nginx) nginx="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --stop) stop=1; shift ;;
        *) echo "start_server.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ "$port" == "$control_port" ]]; then
    echo "start_server.sh: --port and --control-port must differ" >&2
    exit 2
fi

private_dir "$dir"
dir=$(cd "$dir" && pwd)
pidfile="$dir/superlink.pid"
logfile="$dir/superlink.log"
gw_pidfile="$dir/fleet-gateway.pid"
gw_log="$dir/fleet-gateway.log"
gw_conf="$dir/fleet-gateway.conf"

# The gateway first: shops lose their way in before the SuperLink goes.
stop_if_asked "$stop" "$gw_pidfile" "$pidfile"

for f in "$pidfile" "$gw_pidfile"; do
    if [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; then
        echo "$(basename "$f" .pid) from $dir is already running (pid $(cat "$f")); --stop it first" >&2
        exit 1
    fi
done
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
if [[ -z "$nginx" ]]; then
    nginx=$(command -v nginx || true)
    [[ -n "$nginx" ]] || { [[ -x /usr/sbin/nginx ]] && nginx=/usr/sbin/nginx; }
fi
[[ -n "$nginx" && -x "$nginx" ]] || {
    echo "nginx not found (the Fleet gateway): install it (apt-get install nginx-light) or" \
        "pass --nginx PATH" >&2
    exit 1
}
database="${database:-$dir/superlink.db}"

export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
# A new session (setsid): the SuperLink is the leader of its own process group. Its
# flower-superexec runs in a session of its own; stop_pid (lib.sh) finds it as a child.
setsid flower-superlink \
    --ssl-ca-certfile "$certs/ca.crt" \
    --ssl-certfile "$certs/server.pem" \
    --ssl-keyfile "$certs/server.key" \
    --enable-supernode-auth \
    --disable-runtime-dependency-installation \
    --database "$database" \
    --host 127.0.0.1 --port "$control_port" \
    >"$logfile" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

wait_health() {  # wait_health URL PID LOG: until URL answers; 1 if PID exits or time is up
    for _ in $(seq 1 $((timeout * 2))); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "$(basename "$3" .log) exited; last lines of $3:" >&2
            tail -n 20 "$3" >&2
            return 1
        fi
        if curl -fsS --cacert "$certs/ca.crt" "$1" -o /dev/null 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    echo "no answer from $1 after $timeout s; log: $3" >&2
    return 1
}
fail() {
    [[ -f "$gw_pidfile" ]] && stop_pid "$gw_pidfile" >&2
    [[ -f "$pidfile" ]] && stop_pid "$pidfile" >&2
    exit 1
}
wait_health "https://127.0.0.1:$control_port/health" "$pid" "$logfile" || fail
# sqlite creates superlink.db with the umask (600); make sure of it for an older file too.
for f in "$database" "$database-wal" "$database-shm" "$database-journal"; do
    [[ -f "$f" ]] && chmod 600 "$f"
done

listen=$host
[[ "$listen" == *:* ]] && listen="[$listen]"
private_dir "$dir/fleet-gateway-tmp"
cat >"$gw_conf" <<CONF
# The Fleet gateway of deploy/start_server.sh (generated; edits are overwritten).
daemon off;
master_process on;
worker_processes 1;
pid $dir/fleet-gateway.nginx.pid;
error_log $gw_log notice;
events { worker_connections 512; }
http {
    access_log $dir/fleet-gateway.access.log;
    server_tokens off;
    client_body_temp_path $dir/fleet-gateway-tmp/body;
    proxy_temp_path $dir/fleet-gateway-tmp/proxy;
    fastcgi_temp_path $dir/fleet-gateway-tmp/fastcgi;
    uwsgi_temp_path $dir/fleet-gateway-tmp/uwsgi;
    scgi_temp_path $dir/fleet-gateway-tmp/scgi;
    upstream superlink { server 127.0.0.1:$control_port; keepalive 16; }
    server {
        listen $listen:$port ssl;
        ssl_certificate $certs/server.pem;
        ssl_certificate_key $certs/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 512m;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_read_timeout 600s;
        proxy_send_timeout 600s;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $certs/ca.crt;
        proxy_ssl_name localhost;
        proxy_ssl_session_reuse on;
        # Only the Fleet API (SuperNodes: register/activate with a registered key, pull and
        # push messages, ...), POST, and the exact path as sent (no encoded or dotted tricks).
        location /v1/fleet/ {
            limit_except POST { deny all; }
            if (\$request_uri !~ "^/v1/fleet/[a-z-]+\$") { return 404; }
            proxy_pass https://superlink;
        }
        location = /health {
            limit_except GET { deny all; }
            proxy_pass https://superlink;
        }
        # The Control API (/v1/control/*: start runs, register nodes) and the Runtime API
        # (/v1/runtime/*) stay on the operator's loopback.
        location / { return 404; }
    }
}
CONF
"$nginx" -t -q -p "$dir" -e "$gw_log" -c "$gw_conf" 2>>"$gw_log" || {
    echo "the gateway's nginx config is refused; see $gw_log" >&2
    fail
}
setsid "$nginx" -p "$dir" -e "$gw_log" -c "$gw_conf" >>"$gw_log" 2>&1 </dev/null &
gw_pid=$!
echo "$gw_pid" >"$gw_pidfile"

probe=$host
[[ "$host" == "0.0.0.0" ]] && probe=127.0.0.1
[[ "$host" == "::" ]] && probe=::1
[[ "$probe" == *:* ]] && probe="[$probe]"
url="https://$probe:$port/health"
wait_health "$url" "$gw_pid" "$gw_log" || fail

cat <<MSG
SuperLink up: pid $pid on 127.0.0.1:$control_port only (log $logfile)
Fleet gateway up: pid $gw_pid, $url answers (log $gw_log); shops connect to $probe:$port,
which serves only the Fleet API: the Control API is reachable from this machine only.

Next steps (operator):
1. A connection in \$FLWR_HOME/config.toml (default ~/.flwr/config.toml) on THIS machine
   (the Control API: only the operator registers shops and starts runs):

   [superlink]
   default = "fedcl"

   [superlink.fedcl]
   address = "127.0.0.1:$control_port"
   root-certificates = "$certs/ca.crt"

2. Register each shop's public key (made at the shop by deploy/make_node_key.sh):
   flwr supernode register shop_00.pub fedcl --name shop_00
   flwr supernode ls fedcl                   # status registered -> online once it connects

3. Publish the plan (window bounds, product catalogue; no customer data):
   python -m fedcl.plan --out ./fedcl-deploy/plan data=online_retail

4. Send ca.crt (never ca.key), the gateway's address ($probe:$port or the public name in the
   certificate) and the plan directory to the shops; each starts
   deploy/start_shop.sh --superlink ADDRESS --events ITS_LOG --plan PLAN_DIR (SHOP_GUIDE.md).

5. Submit a run from the fedcl checkout (the app bundle is built from it):
   flwr run . fedcl --run-config 'overrides="federated.plan_dir=/abs/fedcl-deploy/plan federated.min_shops=3" out-dir="/abs/run-dir"' --format json
   flwr ls fedcl --run-id RUN_ID             # until finished:completed
   flwr log RUN_ID fedcl --show              # the ServerApp's log
   The same command with the same out-dir resumes a stopped run (flwr stop RUN_ID fedcl).

Stop: deploy/start_server.sh --stop --dir $dir
MSG
