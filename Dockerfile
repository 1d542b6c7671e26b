# One image for every service (gateway, worker, trainer, insights); docker-compose.yml picks
# the service with `python -m services.<name>`. Versions are pinned in requirements.txt only.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, unprivileged uid/gid so files written to mounted volumes have a predictable owner.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY shared/ shared/
COPY services/ services/
COPY models/ models/

# var/ holds the filesystem store when no S3 endpoint is configured (one-container runs);
# it is the only part of /app the service user writes to.
RUN mkdir -p /app/var && chown app:app /app/var

USER app

# Gateway HTTP; worker, trainer and insights serve /metrics and /healthz on their own port.
EXPOSE 8000 9101 9102 9103

CMD ["python", "-m", "services.gateway"]
