#!/usr/bin/env bash
# Make an ECDSA P-384 key pair for SuperNode authentication.
#
#   deploy/make_node_key.sh NAME DIR
#
# Writes DIR/NAME (private key: stays at the shop) and DIR/NAME.pub (public key: send it to
# the operator, who registers it with `flwr supernode register DIR/NAME.pub <connection>`).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ $# -ne 2 ]]; then
    echo "usage: make_node_key.sh NAME DIR" >&2
    exit 2
fi
name="$1"
dir="$2"
command -v ssh-keygen >/dev/null || { echo "make_node_key.sh: ssh-keygen not found" >&2; exit 1; }
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
if [[ -e "$dir/$name" ]]; then
    echo "make_node_key.sh: $dir/$name exists; not overwriting" >&2
    exit 1
fi
ssh-keygen -q -t ecdsa -b 384 -N "" -C "fedcl-$name" -f "$dir/$name"
chmod 600 "$dir/$name"
echo "private key: $dir/$name (keep it at the shop)"
echo "public key:  $dir/$name.pub (send to the operator)"
