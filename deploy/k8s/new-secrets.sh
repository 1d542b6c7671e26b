#!/usr/bin/env bash
# Prints the Secrets the manifests read, with fresh random values, for `kubectl apply -f -`:
#
#   deploy/k8s/new-secrets.sh | kubectl apply -f -        # once, before the first deploy
#   deploy/k8s/new-secrets.sh slc slc.example.org | ...   # the certificate also names this host
#
#   slc-gateway      write-token             bearer token for uploads, training and promotion
#   slc-s3           access-key, secret-key  the S3 service's administrator keys, read by the
#                                            bootstrap Job only (the local overlay's MinIO takes
#                                            them as its root credentials; for an external S3
#                                            service, replace them with the keys it issued)
#   slc-<service>-credentials                each service's own user (gateway, worker, trainer,
#                    username, secret        insights): username slc-<service>; secret is its
#                                            broker password and S3 secret key. The bootstrap Job
#                                            makes the users with them (README.md)
#   slc-keda-credentials                     KEDA's broker user slc-keda (TriggerAuthentication
#                    username, secret        worker-rabbitmq, base/worker.yaml)
#   slc-gateway-tls  tls.crt, tls.key        the Ingress's certificate (ingress.yaml): the files
#                    (ca.crt)                SLC_TLS_CERT and SLC_TLS_KEY name when both are set,
#                                            else a self-signed one for localhost, 127.0.0.1 and
#                                            the optional host name (deploy/compose/new-cert.sh;
#                                            clients trust its ca.crt)
# The broker administrator's credentials are not here: the RabbitMQ Cluster Operator writes
# them into slc-rabbitmq-default-user. There are no default values anywhere in the manifests.
# Apply it once, before the first deploy; to give the services new secrets later, see
# README.md ("Credentials and the bootstrap Job").
set -euo pipefail
namespace=${1:-slc}
hostname=${2:-${SLC_TLS_HOSTNAME:-}}
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
base64_of() { base64 -w0 < "$1"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "${SLC_TLS_CERT:-}" ] && [ -n "${SLC_TLS_KEY:-}" ]; then
  tls_cert=$SLC_TLS_CERT
  tls_key=$SLC_TLS_KEY
  tls_ca=
else
  "$(dirname "$0")/../compose/new-cert.sh" "$work/tls" "$hostname" >/dev/null
  echo "slc-gateway-tls: a self-signed certificate for localhost, 127.0.0.1${hostname:+ and $hostname};" \
    "clients trust its CA: kubectl -n $namespace get secret slc-gateway-tls -o jsonpath='{.data.ca\\.crt}' | base64 -d" >&2
  tls_cert=$work/tls/cert.pem
  tls_key=$work/tls/key.pem
  tls_ca=$work/tls/ca.pem
fi
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: slc-gateway
  namespace: ${namespace}
  labels:
    app.kubernetes.io/part-of: skin-lesion-classifier
type: Opaque
stringData:
  write-token: "$(secret)"
---
apiVersion: v1
kind: Secret
metadata:
  name: slc-s3
  namespace: ${namespace}
  labels:
    app.kubernetes.io/part-of: skin-lesion-classifier
type: Opaque
stringData:
  access-key: "slc-$(secret | head -c 12)"
  secret-key: "$(secret)"
YAML
for service in gateway worker trainer insights keda; do
  cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: slc-${service}-credentials
  namespace: ${namespace}
  labels:
    app.kubernetes.io/part-of: skin-lesion-classifier
type: Opaque
stringData:
  username: "slc-${service}"
  secret: "$(secret)"
YAML
done
cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: slc-gateway-tls
  namespace: ${namespace}
  labels:
    app.kubernetes.io/part-of: skin-lesion-classifier
type: kubernetes.io/tls
data:
  tls.crt: $(base64_of "$tls_cert")
  tls.key: $(base64_of "$tls_key")
YAML
if [ -n "$tls_ca" ]; then
  echo "  ca.crt: $(base64_of "$tls_ca")"
fi
