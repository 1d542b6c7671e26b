#!/usr/bin/env bash
# Writes a TLS certificate for the proxy (docker-compose.yml `proxy`) when there is none:
# a throwaway certificate authority signs a server certificate for localhost, 127.0.0.1, ::1
# and an optional host name. Never overwrites: an existing certificate is kept.
#
#   deploy/compose/new-cert.sh [folder] [hostname]   # default folder deploy/compose/tls
#
# Writes, in the folder (created only-you-may-enter, mode 700):
#   cert.pem  the server certificate, then the CA's (the chain nginx sends)
#   key.pem   its private key, mode 644: the proxy's unprivileged user (uid 101) reads it
#             through its own bind mount; on this host the 700 folder keeps everyone else out
#   ca.pem    the CA certificate clients trust: curl --cacert ca.pem, a browser's import
# The CA's private key is deleted once it has signed: nothing else can ever be signed by it.
# The server certificate is valid 825 days (the most Apple's clients accept); delete the folder
# and run this again to renew. To use certificates of your own, point SLC_TLS_CERT and
# SLC_TLS_KEY in .env at them instead (docs/proxy-and-tls.md, "TLS").
set -euo pipefail
cd "$(dirname "$0")/../.."
folder=${1:-deploy/compose/tls}
hostname=${2:-${SLC_TLS_HOSTNAME:-}}
if [ -e "$folder/cert.pem" ] || [ -e "$folder/key.pem" ]; then
  echo "$folder already holds a certificate; kept (delete the folder to make a new one)" >&2
  exit 0
fi
command -v openssl >/dev/null || { echo "openssl is needed (Debian: apt-get install openssl)" >&2; exit 1; }
mkdir -p "$folder"
chmod 700 "$folder"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
names="DNS:localhost,IP:127.0.0.1,IP:::1"
subject="localhost"
if [ -n "$hostname" ]; then
  # An address is an IP entry of the certificate; anything else a DNS name.
  if [[ $hostname =~ ^[0-9.]+$ || $hostname == *:* ]]; then names="$names,IP:$hostname"; else names="$names,DNS:$hostname"; fi
  subject=$hostname
fi
openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 825 -subj "/CN=Skin Lesion Classifier local CA" \
  -keyout "$work/ca-key.pem" -out "$work/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null
openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=$subject" \
  -keyout "$work/key.pem" -out "$work/server.csr" 2>/dev/null
cat > "$work/server.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $names
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" -CAcreateserial \
  -days 825 -sha256 -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null
cat "$work/server.pem" "$work/ca.pem" > "$folder/cert.pem"
cp "$work/ca.pem" "$folder/ca.pem"
install -m 644 "$work/key.pem" "$folder/key.pem"
chmod 644 "$folder/cert.pem" "$folder/ca.pem"
echo "wrote $folder/cert.pem and key.pem for $names (clients trust $folder/ca.pem)"
