"""The issue's drift target, on real parts: replaying 2,000 ISIC 2018 test images raises no
alert; switching the stream to Derm7pt or to ISIC 2020 raises it within 300 predictions.

The shipped production model, seeded into the real S3 store and loaded through the registry,
scores the real images once (what a worker announces of each). The streams go as
`predictions.scored` events of 8 over the real RabbitMQ to the real insights process; its
`slc_input_drift` gauge is scraped after every event, one scrape per 15 s as Prometheus
scrapes, and promtool evaluates the real InputDrift rule on that series: quiet at every step
of the ISIC 2018 part, firing where the rule's `for` says after the figure crosses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.drift_replay import (
    EVENT_SIZE,
    IN_DOMAIN_PREDICTIONS,
    SWITCHED_PREDICTIONS,
    SWITCHES,
    collection_paths,
    events,
    scored_predictions,
    stream,
)
from services.insights.drift import DRIFT_THRESHOLD
from shared.errors import ObjectNotFound
from shared.messaging.channel import Channel
from shared.messaging.rabbitmq import open_channel
from shared.messaging.topology import EVENT_PREDICTIONS_SCORED, Topology
from shared.serving import registry
from shared.settings import REPO_ROOT, Settings
from shared.storage import ObjectStore, get_json, layout
from tests.support.promtool import ALERT_RULES, run_promtool
from tests.support.system import RunningSystem

SCRAPE_INTERVAL_S = 15  # deploy/prometheus/prometheus.yml
INGEST_TIMEOUT_S = 10
RECORD_TIMEOUT_S = 30


def drift_rule() -> dict[str, Any]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    (rule,) = [rule for group in groups for rule in group["rules"] if rule["alert"] == "InputDrift"]
    return rule


def publish_replay_version(store: ObjectStore, production: str, name: str) -> None:
    """A version `name` with production's domain statistics: a window of its own for one stream."""
    card = registry.read_card(store, production)
    domain_file = card.domain["file"]
    files = {domain_file: store.get(layout.model_file(production, domain_file))}
    registry.publish_version(store, name, files, card.document)


def scrape(url: str, version: str) -> tuple[float, float | None]:
    """(predictions taken in, drift figure or None) of `version` from the insights /metrics."""
    taken, drift = 0.0, None
    for family in text_string_to_metric_families(requests.get(url, timeout=5).text):
        for sample in family.samples:
            if sample.labels.get("model_version") != version:
                continue
            if sample.name == "slc_input_drift_predictions_total":
                taken = sample.value
            elif sample.name == "slc_input_drift":
                drift = sample.value
    return taken, drift


def replay(channel: Channel, exchange: str, url: str, version: str, predictions: list[dict]) -> list[float | None]:
    """Publish the stream event by event; the insights gauge after each one."""
    figures = []
    for sent, event in enumerate(events(version, predictions), start=1):
        channel.publish(exchange, EVENT_PREDICTIONS_SCORED, event, mandatory=False, persistent=False)
        deadline = time.monotonic() + INGEST_TIMEOUT_S
        while (taken := scrape(url, version))[0] < min(sent * EVENT_SIZE, len(predictions)):
            assert time.monotonic() < deadline, f"insights took in {taken[0]} of {sent * EVENT_SIZE} predictions"
            time.sleep(0.005)
        figures.append(taken[1])
    return figures


def firing_step(figures: list[float | None], from_step: int, for_steps: int) -> int | None:
    """The first step at or after `from_step` at which the rule fires: above the threshold at
    that step and the `for_steps` before it (one evaluation per scrape)."""
    above = [figure is not None and figure > DRIFT_THRESHOLD for figure in figures]
    return next(
        (step for step in range(max(from_step, for_steps), len(figures)) if all(above[step - for_steps : step + 1])),
        None,
    )


def rule_test(version: str, figures: list[float | None], quiet_steps: int, fires_at: int) -> dict[str, Any]:
    """A promtool test group: no InputDrift at each of the first `quiet_steps` steps nor just
    before `fires_at`, InputDrift firing for `version` at `fires_at`."""
    rule = drift_rule()
    rendered = {
        name: text.replace("{{ $labels.model_version }}", version).replace(
            '{{ $value | printf "%.2f" }}', f"{figures[fires_at]:.2f}"
        )
        for name, text in rule["annotations"].items()
    }
    quiet = [*range(quiet_steps), fires_at - 1]
    values = " ".join("_" if figure is None else f"{figure:.6f}" for figure in figures)
    return {
        "interval": f"{SCRAPE_INTERVAL_S}s",
        "input_series": [{"series": f'slc_input_drift{{job="insights", model_version="{version}"}}', "values": values}],
        "alert_rule_test": [
            *(
                {"eval_time": f"{step * SCRAPE_INTERVAL_S}s", "alertname": "InputDrift", "exp_alerts": []}
                for step in quiet
            ),
            {
                "eval_time": f"{fires_at * SCRAPE_INTERVAL_S}s",
                "alertname": "InputDrift",
                "exp_alerts": [
                    {
                        "exp_labels": {**rule["labels"], "job": "insights", "model_version": version},
                        "exp_annotations": rendered,
                    }
                ],
            },
        ],
    }


def wait_for_record(store: ObjectStore, since: float) -> dict[str, Any]:
    """The first drift record the insights service writes after `since` (Unix time)."""
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            record = get_json(store, layout.INSIGHTS_DRIFT)
            if record["computed_at"] > since:
                return record
        except ObjectNotFound:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no drift record written within {RECORD_TIMEOUT_S}s")


def test_isic_2018_raises_no_drift_alert_and_derm7pt_or_isic_2020_raise_it_within_300_predictions(
    system: RunningSystem, s3_settings: Settings, store: ObjectStore, output_dir: Path, tmp_path: Path
) -> None:
    production = registry.seed_from_directory(store, REPO_ROOT / "models")
    model = registry.load_production(store)
    assert model.domain is not None, f"the shipped model {production} has no domain statistics"
    scored = {name: scored_predictions(model, paths) for name, paths in collection_paths().items()}
    insights = system.start_service("insights", "services.insights", "insights_metrics_port")
    metrics_url = f"http://127.0.0.1:{insights.port}/metrics"

    exchange = Topology.from_settings(s3_settings).events_exchange
    for_steps = int(drift_rule()["for"].removesuffix("m")) * 60 // SCRAPE_INTERVAL_S
    switch_step = IN_DOMAIN_PREDICTIONS // EVENT_SIZE
    groups, report = [], {}
    with open_channel(s3_settings.amqp_url, confirms=True) as channel:
        for offset, name in enumerate(SWITCHES):
            version = f"replay-{name}"
            publish_replay_version(store, production, version)
            figures = replay(
                channel, exchange, metrics_url, version, stream(scored["isic2018_test"], scored[name], offset)
            )
            fires_at = firing_step(figures, switch_step, for_steps)
            in_domain = [figure for figure in figures[:switch_step] if figure is not None]
            report[name] = {
                "in_domain_drift_max": max(in_domain),
                "drift_at_end": figures[-1],
                "predictions_until_condition": None,
                "predictions_until_firing": None
                if fires_at is None
                else (fires_at + 1) * EVENT_SIZE - IN_DOMAIN_PREDICTIONS,
            }
            crossing = firing_step(figures, switch_step, 0)
            if crossing is not None:
                report[name]["predictions_until_condition"] = (crossing + 1) * EVENT_SIZE - IN_DOMAIN_PREDICTIONS
            assert fires_at is not None, f"{name}: no alert within {SWITCHED_PREDICTIONS} predictions: {report[name]}"
            groups.append(rule_test(version, figures, switch_step, fires_at))
    replayed_at = time.time()
    (output_dir / "drift-replay.json").write_text(json.dumps(report, indent=2))

    tests_file = tmp_path / "drift_replay_test.yml"
    tests_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(ALERT_RULES)], "evaluation_interval": f"{SCRAPE_INTERVAL_S}s", "tests": groups}
        )
    )
    evaluated = run_promtool("test", "rules", tests_file)
    assert evaluated.returncode == 0, evaluated.stdout[-5000:] + evaluated.stderr[-2000:]
    for name, numbers in report.items():
        assert numbers["predictions_until_firing"] <= SWITCHED_PREDICTIONS, (name, numbers)

    # The store has the figures the gateway shows: both windows above the alert threshold.
    record = wait_for_record(store, since=replayed_at)
    assert record["threshold"] == DRIFT_THRESHOLD
    for name in SWITCHES:
        assert record["versions"][f"replay-{name}"]["window"]["drift"] > DRIFT_THRESHOLD
