"""Entry point: `python -m services.bootstrap` prepares a deployment, then exits.

Run with the administrators' credentials (AMQP_URL, S3_ACCESS_KEY/S3_SECRET_KEY) before the
services start, at every start (compose's `bootstrap` service, a Kubernetes Job); every step
is idempotent:
- the broker: every queue and exchange, and each service's own user with permissions on only
  what it uses (services/bootstrap/access.py), when RABBITMQ_MANAGEMENT_URL is set;
- the store: every bucket, the predictions' expiry rules, the shipped model seeded, and on
  MinIO (S3_ADMIN_API=minio) each service's own user and policy.
The services then run with their own credentials, which may not do any of this.
Exit 0 when all is done; 1 when it could not be done within BOOTSTRAP_TIMEOUT_S; 2 on a bad setting.
The steps are in steps.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.bootstrap.steps import run
from shared.entrypoint import Command, run_service

COMMANDS = {"run": Command("prepare the broker and the store for the services, then exit", run)}


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("bootstrap", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
