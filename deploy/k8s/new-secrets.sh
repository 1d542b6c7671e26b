#!/usr/bin/env bash
# Prints the Secrets the manifests read, with fresh random values, for `kubectl apply -f -`:
#
#   deploy/k8s/new-secrets.sh | kubectl apply -f -        # once, before the first deploy
#
#   slc-gateway  write-token             bearer token for uploads, training and promotion
#   slc-s3       access-key, secret-key  the S3 service's keys (the local overlay's MinIO takes
#                                        them as its root credentials; for an external S3
#                                        service, replace them with the keys it issued)
# The broker's credentials are not here: the RabbitMQ Cluster Operator writes them into
# slc-rabbitmq-default-user. There are no default values anywhere in the manifests.
set -euo pipefail
namespace=${1:-slc}
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
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
