#!/bin/sh
# Healthy once S3 answers and a volume server has registered with the master: before that,
# S3 lists buckets but fails every read of an object with a 500.
set -eu
curl -fsS --max-time 3 http://127.0.0.1:9333/dir/status | grep -q '"DataNodes":\[{'
curl -sS --max-time 3 -o /dev/null http://127.0.0.1:9000/
