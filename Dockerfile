# Images of the app services, from one file:
#   target `serving`: gateway, worker and insights (LiteRT, ONNX Runtime; no TensorFlow)
#   target `trainer`: the trainer service (the serving set plus TensorFlow)
# docker-compose.yml picks the service with `python -m services.<name>`. Versions are chosen in
# requirements.txt only; requirements-serving.txt names the serving subset. The images install
# the locks made from them (requirements/serving.lock, requirements/training.lock: every package
# pinned with its hashes, `make lock`), and each writes its SBOM to /usr/share/slc/sbom.cdx.json
# (deploy/images/sbom.sh IMAGE prints it).
#
# Build arguments (docs/images.md):
#   BASE_IMAGE  a Debian-based image with Python 3.11 and its venv module. The default comes from
#               a registry; deploy/images/ builds one without any (docker-compose.airgap.yml).
#   CA_BUNDLE   a PEM file inside the build context with extra CA certificates to trust, for
#               networks that intercept TLS (deploy/images/ca/README.md); empty by default.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
ARG CA_BUNDLE=deploy/images/ca/none.pem

# The venv works the same on either kind of base (Debian's own Python forbids a system-wide
# pip install), and puts `python` first on PATH for the commands and health checks.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

COPY ${CA_BUNDLE} /usr/local/share/ca-certificates/slc-extra.crt
# Only a file that holds a certificate is added; the empty default is dropped.
RUN if grep -q 'BEGIN CERTIFICATE' /usr/local/share/ca-certificates/slc-extra.crt; then \
        update-ca-certificates >/dev/null; \
    else \
        rm /usr/local/share/ca-certificates/slc-extra.crt; \
    fi \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

WORKDIR /app

# Dependencies first: these layers are rebuilt only when the locks change. --require-hashes:
# every file pip installs must have a hash in the lock; --no-deps: the lock is the whole set,
# which `pip check` confirms. One layer, so that what is removed after the install takes no
# space: the packages' own test suites (60 MB, pandas' alone 46 MB) and pip itself; these keep
# the image under 500 MB.
FROM base AS serving-deps
COPY requirements/serving.lock requirements/
RUN python3 -m venv /opt/venv \
    && python -m pip install --no-cache-dir --require-hashes --no-deps -r requirements/serving.lock \
    && python -m pip check \
    && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} + \
    && python -m pip uninstall --quiet --yes pip setuptools

# The SBOM, made in a stage of its own so that the image keeps the file and not the tool:
# CycloneDX's generator (requirements/sbom.lock) lists the venv's Python packages and
# deploy/images/sbom-write.sh adds the Debian packages (dpkg-query). No time stamp or serial
# number, so that two builds installing the same packages write the same file.
FROM serving-deps AS serving-sbom
COPY requirements/sbom.lock deploy/images/sbom-write.sh /tmp/sbom/
RUN python3 -m venv /tmp/sbom/venv \
    && /tmp/sbom/venv/bin/pip install --quiet --no-cache-dir --require-hashes --no-deps -r /tmp/sbom/sbom.lock \
    && /tmp/sbom/venv/bin/cyclonedx-py environment --output-reproducible -o /tmp/sbom/python.cdx.json /opt/venv \
    && /tmp/sbom/sbom-write.sh /usr/share/slc/sbom.cdx.json /tmp/sbom/python.cdx.json

FROM serving-deps AS serving
COPY --from=serving-sbom /usr/share/slc/sbom.cdx.json /usr/share/slc/sbom.cdx.json
COPY shared/ shared/
COPY services/ services/
COPY models/ models/
# var/ holds the filesystem store when no S3 endpoint is configured (one-container runs);
# it is the only part of /app the service user writes to.
RUN mkdir -p /app/var && chown app:app /app/var
USER app
# Gateway HTTP; worker and insights serve /metrics and /healthz on their own port.
EXPOSE 8000 9101 9103
CMD ["python", "-m", "services.gateway"]

# Last, so that building `serving` never builds this stage.
# The serving set is already there at the same versions (serving.lock is resolved within
# training.lock); pip installs the rest.
FROM serving-deps AS trainer-deps
COPY requirements/training.lock requirements/
RUN python -m ensurepip --upgrade >/dev/null \
    && python -m pip install --no-cache-dir --require-hashes --no-deps -r requirements/training.lock \
    && python -m pip check

FROM trainer-deps AS trainer-sbom
COPY requirements/sbom.lock deploy/images/sbom-write.sh /tmp/sbom/
RUN python3 -m venv /tmp/sbom/venv \
    && /tmp/sbom/venv/bin/pip install --quiet --no-cache-dir --require-hashes --no-deps -r /tmp/sbom/sbom.lock \
    && /tmp/sbom/venv/bin/cyclonedx-py environment --output-reproducible -o /tmp/sbom/python.cdx.json /opt/venv \
    && /tmp/sbom/sbom-write.sh /usr/share/slc/sbom.cdx.json /tmp/sbom/python.cdx.json

FROM trainer-deps AS trainer
COPY --from=trainer-sbom /usr/share/slc/sbom.cdx.json /usr/share/slc/sbom.cdx.json
COPY shared/ shared/
COPY services/ services/
COPY models/ models/
RUN mkdir -p /app/var && chown app:app /app/var
# Compose runs it with a read-only root: Keras's and matplotlib's caches go to the /tmp tmpfs.
ENV KERAS_HOME=/tmp/keras MPLCONFIGDIR=/tmp/matplotlib
USER app
EXPOSE 9102
CMD ["python", "-m", "services.trainer", "serve"]
