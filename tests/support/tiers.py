"""What a test needs beyond the suite's RabbitMQ and S3 server, as markers: given to whole folders
and modules here, by path, and to a test that starts the services by the fixture it asks for; a
test's own marker (`@pytest.mark.slow`) adds to these. The markers are described in pyproject.toml.

`make test-fast` runs the tests with none of them (FAST_TESTS in the Makefile); `make test` runs
every test.
"""

from __future__ import annotations

import pytest

# Markers, by folder (ending in "/") or module, relative to the repository.
BY_PATH: dict[str, tuple[str, ...]] = {
    "tests/ui/": ("browser", "system"),
    "tests/faults/": ("faults", "servers", "system"),
    "tests/fuzz/": ("slow",),
    "tests/model/test_card.py": ("slow",),  # trains and packages versions
    "tests/model/test_heatmap_faithfulness.py": ("slow",),  # the shipped model on real images
    "tests/model/test_training.py": ("slow",),  # trains and packages versions
    "tests/shared/test_tls_to_broker_and_store.py": ("servers",),
    "tests/services/test_dead_letters.py": ("system",),
    "tests/services/test_domain_answers.py": ("system",),
    "tests/services/test_hostile_clients.py": ("system",),
    "tests/services/test_least_privilege.py": ("servers",),
    "tests/services/test_prediction_path.py": ("system",),
    "tests/services/test_privacy_system.py": ("system",),
    "tests/services/test_retraining.py": ("system", "slow"),  # trains through the running trainer
    "tests/services/test_trusted_versions.py": ("system",),
    "tests/services/insights/test_drift_replay.py": ("system", "slow"),  # real images, 300 predictions each
    "tests/services/insights/test_service.py": ("system",),
    "tests/services/trainer/test_pipeline.py": ("slow",),  # builds and saves MobileNetV2 models
    "tests/services/insights/test_store_faults.py": ("faults", "servers", "system"),
    "tests/services/trainer/test_store_faults.py": ("faults", "servers", "system", "slow"),
}
# Fixtures that start services as real processes (or hand the test something that does).
SYSTEM_FIXTURES = frozenset({"system", "system_on_broker", "supervised"})
# Fixtures that cost a slow tier's time: the tiny model exported to every serving artifact (~10-20 s).
SLOW_FIXTURES = frozenset({"tiny_artifacts"})


def mark_by_needs(items: list[pytest.Item], root: str) -> None:
    for item in items:
        path = item.path.as_posix().removeprefix(root.rstrip("/") + "/")
        names = {name for prefix, names in BY_PATH.items() if path.startswith(prefix) for name in names}
        fixtures = getattr(item, "fixturenames", ())
        if SYSTEM_FIXTURES.intersection(fixtures):
            names.add("system")
        if SLOW_FIXTURES.intersection(fixtures):
            names.add("slow")
        for name in sorted(names):
            item.add_marker(name)
