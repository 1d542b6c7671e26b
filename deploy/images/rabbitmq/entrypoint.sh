#!/bin/sh
# The official image's handling of RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS: they name the
# user created when the data volume is new. Written as a conf.d file on every start; values
# with spaces or '#' are not supported here (use letters, digits, '-' and '_').
set -eu
if [ -n "${RABBITMQ_DEFAULT_USER:-}" ] && [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then
  printf 'default_user = %s\ndefault_pass = %s\n' "$RABBITMQ_DEFAULT_USER" "$RABBITMQ_DEFAULT_PASS" \
    > /etc/rabbitmq/conf.d/20-user.conf
fi
exec "$@"
