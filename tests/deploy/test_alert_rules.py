"""The alert rules, evaluated by Prometheus's own rule engine (promtool), not read as text."""

from __future__ import annotations

import json
import re

import yaml

from services.insights.drift import DRIFT_THRESHOLD
from shared.settings import REPO_ROOT
from tests.support.promtool import ALERT_RULES, run_promtool

RULE_TESTS = REPO_ROOT / "deploy/prometheus/alerts_test.yml"
DASHBOARD = REPO_ROOT / "deploy/grafana/dashboards/skin-lesion-classifier.json"


def drift_rule() -> dict:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    (rule,) = [rule for group in groups for rule in group["rules"] if rule["alert"] == "InputDrift"]
    return rule


def test_promtool_accepts_every_alert_rule() -> None:
    checked = run_promtool("check", "rules", ALERT_RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    tested = run_promtool("test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_drift_alert_the_insights_record_and_the_dashboard_share_one_threshold() -> None:
    (threshold,) = re.fullmatch(r"slc_input_drift > ([0-9.]+)", drift_rule()["expr"].strip()).groups()
    assert float(threshold) == DRIFT_THRESHOLD
    panels = [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]
    (drift_panel,) = [
        panel for panel in panels if panel["targets"][0]["expr"].startswith("max by (model_version) (slc_input_drift)")
    ]
    steps = drift_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == DRIFT_THRESHOLD
