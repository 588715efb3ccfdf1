#!/usr/bin/env bash
# Make a test CA and a SuperLink server certificate (SANs: localhost, 127.0.0.1, ::1 and any
# extra names given with --san) for fedcl deployments.
#
#   deploy/make_certs.sh [--san DNS:host.example.org] [--san IP:10.0.0.5] [--days N] DIR
#
# Writes DIR/ca.crt, DIR/ca.key (keep private: it signs certificates), DIR/server.pem,
# DIR/server.key. Shops receive only ca.crt. For production use certificates from your own CA.
set -euo pipefail

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}

days=365
extra_sans=""
dir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --san) extra_sans="${extra_sans},$2"; shift 2 ;;
        --days) days="$2"; shift 2 ;;
        -*) echo "make_certs.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) dir="$1"; shift ;;
    esac
done
if [[ -z "$dir" ]]; then
    echo "make_certs.sh: missing DIR" >&2
    usage >&2
    exit 2
fi
command -v openssl >/dev/null || { echo "make_certs.sh: openssl not found" >&2; exit 1; }

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"

openssl genrsa -out ca.key 4096 2>/dev/null
openssl req -new -x509 -key ca.key -sha256 -days "$days" -out ca.crt \
    -subj "/O=fedcl test CA/CN=fedcl-test-ca" 2>/dev/null

openssl genrsa -out server.key 4096 2>/dev/null
openssl req -new -key server.key -out server.csr -subj "/O=fedcl/CN=localhost" 2>/dev/null
cat > server.ext <<EXT
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1${extra_sans}
EXT
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.pem \
    -days "$days" -sha256 -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.crt server.pem

openssl verify -CAfile ca.crt server.pem >/dev/null
echo "wrote $(pwd)/{ca.crt,ca.key,server.pem,server.key}"
openssl x509 -in server.pem -noout -ext subjectAltName | sed -n '2p' | sed 's/^ */SANs: /'
