#!/bin/sh
# Starts nginx (deploy/nginx/nginx.conf) as the container's unprivileged user. Writes the one
# value the configuration cannot read from the environment: the host port HTTPS is published
# on (PROXY_HTTPS_PUBLISH, "[address:]port"), which the HTTP listener's redirect must name.
set -eu
mkdir -p /tmp/nginx
publish=${PROXY_HTTPS_PUBLISH:-443}
port=${publish##*:}
case $port in
  '' | *[!0-9]*) echo "PROXY_HTTPS_PUBLISH=$publish does not end in a port number" >&2; exit 2 ;;
  443) suffix= ;;
  *) suffix=":$port" ;;
esac
printf 'set $https_port "%s";\n' "$suffix" > /tmp/nginx/https-port.conf
exec nginx -e stderr -c /etc/nginx/slc/nginx.conf
