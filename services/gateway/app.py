"""The gateway's Flask app factory: REST API, web UI, operations endpoints."""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from services.gateway import (
    audit_log,
    datasets,
    errors,
    heatmaps,
    insights_api,
    model_versions,
    openapi,
    operations,
    predictions,
    training,
    ui,
)
from services.gateway.broker_client import BrokerClient
from services.gateway.json_provider import FiniteJSONProvider
from services.gateway.quotas import QueuedJobs
from services.gateway.request_body import UploadRequest
from shared import metrics
from shared.errors import TransientError
from shared.images import DecodeBudget
from shared.messaging.topology import Topology
from shared.serving import registry
from shared.settings import Settings
from shared.storage import ObjectStore, create_store

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    store: ObjectStore | None = None,
    broker_client: BrokerClient | None = None,
) -> Flask:
    """Build the app. Dependencies default to the ones the settings name; tests pass their own."""
    # No app-wide static route: the ui blueprint serves the page's files with its headers.
    app = Flask(__name__, static_folder=None)
    app.request_class = UploadRequest
    app.config["SETTINGS"] = settings
    # Whole-request bound: every file at its own limit, plus room for the form's framing.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    if settings.proxy_hops:
        # The client's address (quotas) and the scheme and host it used (the same-origin check)
        # come from the proxy's X-Forwarded-* headers, believed from that many proxies only.
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]
    app.json = FiniteJSONProvider(app)

    store = store if store is not None else create_store(settings)
    try:
        registry.seed_from_directory(store, settings.models_dir)
    except TransientError as error:
        # Bootstrap (compose, Kubernetes) or the workers (`make run`) seed it too; the gateway
        # starts anyway and says so on /readyz.
        log.warning("could not seed the store with the shipped model: %s", error)
    if broker_client is None:
        broker_client = BrokerClient(
            settings.amqp_url,
            Topology.from_settings(settings),
            publish_timeout_s=settings.predict_timeout_s,
            ca_file=settings.amqp_ca_file,
        )
        broker_client.start()
    app.extensions["store"] = store
    app.extensions["broker_client"] = broker_client
    app.extensions["decode_budget"] = DecodeBudget(settings.max_decoded_bytes_per_process)
    app.extensions["upload_slots"] = threading.BoundedSemaphore(settings.upload_slot_count)
    queued_jobs = QueuedJobs(settings.max_queued_jobs_per_client)
    broker_client.add_answer_listener(queued_jobs.release)
    app.extensions["queued_jobs"] = queued_jobs

    errors.init_app(app)
    app.register_blueprint(operations.blueprint)
    blueprints = (ui, predictions, heatmaps, datasets, training, model_versions, audit_log, insights_api, openapi)
    for module in blueprints:
        app.register_blueprint(module.blueprint)
    _instrument(app)
    return app


def _instrument(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.monotonic()

    @app.after_request
    def record(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.HTTP_DURATION.labels(route).observe(time.monotonic() - g.get("started", time.monotonic()))
        return response
