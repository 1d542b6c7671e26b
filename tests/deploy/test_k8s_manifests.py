"""The Kubernetes manifests (deploy/k8s) render, validate, and agree with the code they deploy.

Each overlay is rendered with `kubectl kustomize` (Debian's kubernetes-client or any newer
kubectl). Kubernetes objects are validated against the Kubernetes API schemas of
kubernetes-validate (oldest and newest version checked below); the KEDA ScaledObject and the
RabbitmqCluster against the schema subsets kept in deploy/k8s/schemas. Every pod template is
checked against the Pod Security Standard "restricted" (tests/support/pod_security.py) and
against the NetworkPolicies that limit its egress. No cluster runs here: nothing below shows
that the objects would be accepted by a real API server or work there.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.bootstrap.access import BROKER_ONLY_SERVICES, SERVICES, user_name
from shared.messaging.topology import Topology
from shared.settings import Settings
from tests.support.pod_security import restricted_violations, selects

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("local", "production")
# kubernetes-validate's schemas: the oldest Kubernetes these manifests target and the newest.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
NAMESPACE = "slc"
SETTINGS_ENV = {field.name.upper() for field in dataclasses.fields(Settings)}
# Port on which each app service answers /healthz, /readyz and /metrics, and its setting.
APP_PORTS = {"gateway": 8000, "worker": 9101, "trainer": 9102, "insights": 9103}
APP_PORT_SETTINGS = {
    "gateway": "HTTP_PORT",
    "worker": "WORKER_METRICS_PORT",
    "trainer": "TRAINER_METRICS_PORT",
    "insights": "INSIGHTS_METRICS_PORT",
}
# Env names that are not settings: the broker credentials AMQP_URL is put together from.
HELPER_ENV = {"RABBITMQ_USERNAME", "RABBITMQ_PASSWORD"}
RABBITMQ_CLUSTER = "slc-rabbitmq"
RABBITMQ_NODES = 3
# The administrators' credentials: the broker's (the RabbitMQ Cluster Operator's Secret) and the
# store's root keys. Only the bootstrap Job may read them.
ADMIN_SECRETS = {f"{RABBITMQ_CLUSTER}-default-user", "slc-s3"}
BOOTSTRAP = "bootstrap"
# Kinds kubernetes-validate has no schema for: checked against deploy/k8s/schemas instead.
CUSTOM_KINDS = ("ScaledObject", "TriggerAuthentication", "RabbitmqCluster")
_REFERENCE = re.compile(r"\$\((\w+)\)")


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed (Debian: apt-get install kubernetes-client)")
    return path


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in rendered(overlay) if obj["kind"] == kind}


@cache
def crd_schema(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / "schemas" / name).read_text())


def new_secrets() -> list[dict[str, Any]]:
    script = subprocess.run([str(K8S / "new-secrets.sh")], capture_output=True, text=True, timeout=30, check=True)
    return [doc for doc in yaml.safe_load_all(script.stdout) if doc]


def app_containers(overlay: str) -> dict[str, dict[str, Any]]:
    deployments = objects(overlay, "Deployment")
    return {name: deployments[name]["spec"]["template"]["spec"]["containers"][0] for name in APP_PORTS}


def bootstrap_container(overlay: str) -> dict[str, Any]:
    (container,) = objects(overlay, "Job")[BOOTSTRAP]["spec"]["template"]["spec"]["containers"]
    return container


def serving_containers(overlay: str) -> dict[str, dict[str, Any]]:
    """Every container running this project's code: the app services' and bootstrap's."""
    return {**app_containers(overlay), BOOTSTRAP: bootstrap_container(overlay)}


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each env name taken from a Secret, with the Secret's name and key."""
    return {
        entry["name"]: (entry["valueFrom"]["secretKeyRef"]["name"], entry["valueFrom"]["secretKeyRef"]["key"])
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }


def effective_env(overlay: str, container: dict[str, Any]) -> dict[str, str | None]:
    """The container's env as the process sees it: slc-config, overridden by `env` (valueFrom: None)."""
    config = objects(overlay, "ConfigMap")["slc-config"]["data"]
    assert [source["configMapRef"]["name"] for source in container["envFrom"]] == ["slc-config"]
    return {**config, **{entry["name"]: entry.get("value") for entry in container["env"]}}


def validate_kubernetes(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {list(error.path)}: {error.message}")


# Rendering and schemas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_every_part_in_one_namespace(overlay: str) -> None:
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in rendered(overlay)}
    for name in APP_PORTS:
        assert ("Deployment", name) in kinds
    assert {("HorizontalPodAutoscaler", "gateway"), ("PodDisruptionBudget", "gateway")} <= kinds
    assert {("ScaledObject", "worker"), ("RabbitmqCluster", RABBITMQ_CLUSTER)} <= kinds
    assert {("Job", BOOTSTRAP), ("TriggerAuthentication", "worker-rabbitmq")} <= kinds
    namespaced = [obj for obj in rendered(overlay) if obj["kind"] != "Namespace"]
    assert {obj["metadata"].get("namespace") for obj in namespaced} == {NAMESPACE}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kubernetes_object_validates_against_the_api_schema(overlay: str, version: str) -> None:
    checked = 0
    for obj in [*rendered(overlay), *new_secrets()]:
        if obj["kind"] in CUSTOM_KINDS:
            continue  # custom resources: checked against their CRD schemas below
        validate_kubernetes(obj, version)
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_scaled_object_validates_against_the_keda_schema(overlay: str) -> None:
    scaled = objects(overlay, "ScaledObject")["worker"]
    schema = crd_schema("keda.sh_v1alpha1_scaledobject.yaml")
    jsonschema.validate(scaled, schema)
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "rabbitmq"
        jsonschema.validate(trigger["metadata"], schema["x-rabbitmq-trigger-metadata"])
    # KEDA hands `behavior` to the HPA it creates: it must be a valid HPA behavior.
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    validate_kubernetes(hpa_with(behavior), KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rabbitmq_cluster_validates_against_the_operator_schema(overlay: str) -> None:
    cluster = objects(overlay, "RabbitmqCluster")[RABBITMQ_CLUSTER]
    jsonschema.validate(cluster, crd_schema("rabbitmq.com_v1beta1_rabbitmqcluster.yaml"))
    spec = cluster["spec"]
    # `resources` and `affinity` are Kubernetes types: validated as a pod's.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rabbitmq-fields"},
        "spec": {
            "affinity": spec["affinity"],
            "containers": [{"name": "rabbitmq", "image": spec["image"], "resources": spec["resources"]}],
        },
    }
    validate_kubernetes(pod, KUBERNETES_VERSIONS[-1])


def hpa_with(behavior: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-behavior"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "maxReplicas": 1,
            "behavior": behavior,
        },
    }


def test_a_broken_object_fails_validation() -> None:
    """The validators above can fail: a misspelt field and a number where KEDA wants a string."""
    deployment = objects("local", "Deployment")["gateway"]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    scaled = objects("local", "ScaledObject")["worker"]
    trigger = {**scaled["spec"]["triggers"][0], "metadata": {**scaled["spec"]["triggers"][0]["metadata"], "value": 20}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**scaled, "spec": {**scaled["spec"], "triggers": [trigger]}},
            crd_schema("keda.sh_v1alpha1_scaledobject.yaml"),
        )


# Agreement with the code


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_env_name_is_a_settings_field(overlay: str) -> None:
    config = objects(overlay, "ConfigMap")["slc-config"]["data"]
    assert set(config) <= SETTINGS_ENV, set(config) - SETTINGS_ENV
    for name, container in serving_containers(overlay).items():
        names = {entry["name"] for entry in container["env"]}
        assert names - HELPER_ENV <= SETTINGS_ENV, f"{name}: {names - HELPER_ENV - SETTINGS_ENV}"
        assert [source["configMapRef"]["name"] for source in container["envFrom"]] == ["slc-config"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_references_name_variables_defined_before_them(overlay: str) -> None:
    """Kubernetes expands $(NAME) only from variables earlier in the list; a later one stays literal."""
    for name, container in serving_containers(overlay).items():
        defined: set[str] = set()
        for entry in container["env"]:
            missing = set(_REFERENCE.findall(entry.get("value", ""))) - defined
            assert not missing, f"{name}: {entry['name']} uses {missing} before they are defined"
            defined.add(entry["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_amqp_url_lists_every_node_of_the_rabbitmq_cluster(overlay: str) -> None:
    replicas = objects(overlay, "RabbitmqCluster")[RABBITMQ_CLUSTER]["spec"]["replicas"]
    assert replicas == RABBITMQ_NODES
    expected = {
        f"{RABBITMQ_CLUSTER}-server-{index}.{RABBITMQ_CLUSTER}-nodes.{NAMESPACE}.svc:5672" for index in range(replicas)
    }
    for name, container in serving_containers(overlay).items():
        amqp_url = next(entry["value"] for entry in container["env"] if entry["name"] == "AMQP_URL")
        hosts = {url.split("@", 1)[1].split("/", 1)[0] for url in amqp_url.split(",")}
        assert hosts == expected, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes_match_each_services_listener(overlay: str) -> None:
    deployments = objects(overlay, "Deployment")
    for name, container in app_containers(overlay).items():
        env = {entry["name"]: entry.get("value") for entry in container["env"]}
        port = APP_PORTS[name]
        assert env[APP_PORT_SETTINGS[name]] == str(port)
        ports = {entry["name"]: entry["containerPort"] for entry in container["ports"]}
        assert list(ports.values()) == [port]
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"]["path"] == path
            assert ports[container[probe]["httpGet"]["port"]] == port
        annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert container["command"][:3] == ["python", "-m", f"services.{name}"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_resources_and_every_secret_reference_is_written_by_the_script(overlay: str) -> None:
    written = {
        (s["metadata"]["name"], key) for s in new_secrets() for key in {**s.get("stringData", {}), **s.get("data", {})}
    }
    operator_written = {(f"{RABBITMQ_CLUSTER}-default-user", key) for key in ("username", "password")}
    workloads = [*objects(overlay, "Deployment").values(), *objects(overlay, "Job").values()]
    for workload in workloads:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert {"requests", "limits"} <= set(container["resources"]), workload["metadata"]["name"]
            for entry in container.get("env", []):
                if "valueFrom" in entry:
                    ref = entry["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) in written | operator_written
                    assert not ref.get("optional", False)
    for auth in objects(overlay, "TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert (ref["name"], ref["key"]) in written, auth["metadata"]["name"]
    assert not [obj for obj in rendered(overlay) if obj["kind"] == "Secret"], "secrets must not be in the manifests"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_scaler_watches_the_predict_queue_of_the_cluster(overlay: str) -> None:
    scaled = objects(overlay, "ScaledObject")["worker"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "worker"
    assert "replicas" not in objects(overlay, "Deployment")["worker"]["spec"], "KEDA owns the worker count"
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    (trigger,) = spec["triggers"]
    metadata = trigger["metadata"]
    assert metadata["queueName"] == Topology.from_settings(Settings()).predict_queue
    assert metadata["mode"] == "QueueLength"
    assert metadata["host"] == f"amqp://{RABBITMQ_CLUSTER}.{NAMESPACE}.svc:5672/"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_scaler_uses_kedas_own_broker_user_through_a_trigger_authentication(overlay: str) -> None:
    """KEDA logs in as slc-keda (no permission but connecting), never with the worker's credentials."""
    (trigger,) = objects(overlay, "ScaledObject")["worker"]["spec"]["triggers"]
    assert not [key for key in trigger["metadata"] if key.endswith("FromEnv")], "credentials from the worker's env"
    assert "@" not in trigger["metadata"]["host"], "credentials in the host"
    reference = trigger["authenticationRef"]
    assert reference.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
    auth = objects(overlay, "TriggerAuthentication")[reference["name"]]
    schema = crd_schema("keda.sh_v1alpha1_triggerauthentication.yaml")
    jsonschema.validate(auth, schema)
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    for parameter in refs:
        jsonschema.validate(parameter, schema["x-rabbitmq-auth-parameters"])
    assert set(refs) == {"username", "password"}
    secrets = {s["metadata"]["name"]: s["stringData"] for s in new_secrets() if "stringData" in s}
    name, key = refs["username"]
    assert secrets[name][key] == user_name("keda")
    # The password is the one bootstrap gives slc-keda.
    assert refs["password"] == secret_refs(bootstrap_container(overlay))["KEDA_SECRET"]


# Least privilege: each service's own credentials; the administrators' for bootstrap alone


def amqp_users(amqp_url: str) -> set[str]:
    return {url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[0] for url in amqp_url.split(",")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_app_container_gets_the_administrators_credentials(overlay: str) -> None:
    for name, container in app_containers(overlay).items():
        used = {secret for secret, _ in secret_refs(container).values()}
        assert not used & ADMIN_SECRETS, f"{name} reads {used & ADMIN_SECRETS}"
        assert [source for source in container["envFrom"] if "secretRef" in source] == [], name
        own = {f"slc-{name}-credentials"} | ({"slc-gateway"} if name == "gateway" else set())
        assert used <= own, f"{name} reads another service's Secret: {used - own}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_app_service_logs_in_as_its_own_user_on_the_broker_and_the_store(overlay: str) -> None:
    assert set(APP_PORTS) == set(SERVICES)
    for name, container in app_containers(overlay).items():
        env = {entry["name"]: entry.get("value") for entry in container["env"]}
        refs = secret_refs(container)
        own_secret = (f"slc-{name}-credentials", "secret")
        assert env["S3_ACCESS_KEY"] == user_name(name) == f"slc-{name}"
        assert refs["S3_SECRET_KEY"] == own_secret, name
        assert amqp_users(env["AMQP_URL"]) == {user_name(name)}, name
        passwords = {url.split("@", 1)[0].rsplit(":", 1)[1] for url in env["AMQP_URL"].split(",")}
        assert passwords == {"$(RABBITMQ_PASSWORD)"} and refs["RABBITMQ_PASSWORD"] == own_secret, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_app_service_checks_the_topology_instead_of_declaring_it(overlay: str) -> None:
    for name, container in app_containers(overlay).items():
        env = effective_env(overlay, container)
        assert env.get("DECLARE_TOPOLOGY") == "false", name
        assert Settings.from_env({"DECLARE_TOPOLOGY": env["DECLARE_TOPOLOGY"]}).declare_topology is False


def test_new_secrets_gives_each_service_and_keda_a_user_and_a_fresh_secret() -> None:
    first, second = (
        {s["metadata"]["name"]: s["stringData"] for s in new_secrets() if "stringData" in s} for _ in range(2)
    )
    secrets = []
    for service in SERVICES + BROKER_ONLY_SERVICES:
        credentials = first[f"slc-{service}-credentials"]
        assert credentials["username"] == user_name(service)
        assert re.fullmatch(r"[0-9a-f]{48}", credentials["secret"]), service
        assert credentials["secret"] != second[f"slc-{service}-credentials"]["secret"], "not random"
        secrets.append(credentials["secret"])
    assert len(set(secrets)) == len(secrets)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_bootstrap_job_runs_with_the_administrators_credentials_and_every_services_secret(overlay: str) -> None:
    job = objects(overlay, "Job")[BOOTSTRAP]
    container = bootstrap_container(overlay)
    assert container["command"] == ["python", "-m", "services.bootstrap"]
    # The serving image, as the gateway's (not the trainer's).
    assert container["image"] == app_containers(overlay)["gateway"]["image"]
    env = effective_env(overlay, container)
    refs = secret_refs(container)
    admin = f"{RABBITMQ_CLUSTER}-default-user"
    assert (refs["RABBITMQ_USERNAME"], refs["RABBITMQ_PASSWORD"]) == ((admin, "username"), (admin, "password"))
    assert amqp_users(env["AMQP_URL"]) == {"$(RABBITMQ_USERNAME)"}
    assert (refs["S3_ACCESS_KEY"], refs["S3_SECRET_KEY"]) == (("slc-s3", "access-key"), ("slc-s3", "secret-key"))
    assert env["RABBITMQ_MANAGEMENT_URL"] == f"http://{RABBITMQ_CLUSTER}.{NAMESPACE}.svc:15672"
    for service in SERVICES + BROKER_ONLY_SERVICES:
        assert refs[f"{service.upper()}_SECRET"] == (f"slc-{service}-credentials", "secret"), service
    # MinIO (the local overlay) gets its users from bootstrap; an external S3 service from its operator.
    assert env.get("S3_ADMIN_API") == ("minio" if overlay == "local" else None)
    settings = Settings.from_env({key: "x" if value is None else value for key, value in env.items()})
    assert settings.rabbitmq_management_url and settings.s3_endpoint
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert spec["backoffLimit"] >= 1
    # A finished Job goes away, so the next `kubectl apply -k` runs it again (README.md).
    assert spec["ttlSecondsAfterFinished"] > 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_trainer_is_one_replica_replaced_not_rolled(overlay: str) -> None:
    trainer = objects(overlay, "Deployment")["trainer"]
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate"
    assert trainer["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0].endswith("-trainer")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_takes_traffic_from_outside_and_only_from_the_ingress_controller(overlay: str) -> None:
    policies = objects(overlay, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    open_to_all = [
        name for name, policy in policies.items() for rule in policy["spec"].get("ingress", []) if "from" not in rule
    ]
    assert open_to_all == [], "no pod may be reached around the proxy's limits"
    gateway = policies["gateway-from-ingress-controller"]["spec"]
    assert gateway["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "gateway"}
    (rule,) = gateway["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert rule["ports"] == [{"protocol": "TCP", "port": APP_PORTS["gateway"]}]
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                assert "ipBlock" not in peer, name
    services = objects(overlay, "Service")
    assert all(service["spec"].get("type", "ClusterIP") == "ClusterIP" for service in services.values())


# The Ingress (ingress-nginx) in front of the gateway, and its certificate

INGRESS_PREFIX = "nginx.ingress.kubernetes.io/"
NGINX_CONF = (REPO / "deploy/nginx/nginx.conf").read_text()


def _nginx_directive(name: str) -> str:
    (value,) = re.findall(r"^\s*" + re.escape(name) + r"\s+([^;]+);", NGINX_CONF, re.MULTILINE)
    return value


def ingress_annotations(overlay: str) -> dict[str, str]:
    annotations = objects(overlay, "Ingress")["gateway"]["metadata"]["annotations"]
    return {name.removeprefix(INGRESS_PREFIX): value for name, value in annotations.items()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_sends_every_path_to_the_gateway_service_over_tls_from_the_scripts_secret(overlay: str) -> None:
    ingress = objects(overlay, "Ingress")["gateway"]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    service = objects(overlay, "Service")["gateway"]
    for rule in ingress["rules"]:
        (path,) = rule["http"]["paths"]
        assert (path["path"], path["pathType"]) == ("/", "Prefix")
        backend = path["backend"]["service"]
        assert backend["name"] == "gateway" and backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    (tls,) = ingress["tls"]
    secret = next(s for s in new_secrets() if s["metadata"]["name"] == tls["secretName"])
    assert secret["type"] == "kubernetes.io/tls" and {"tls.crt", "tls.key"} <= set(secret["data"])
    hosts = {rule.get("host") for rule in ingress["rules"]}
    assert set(tls.get("hosts", [None])) == hosts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_has_the_limits_of_the_compose_proxy(overlay: str) -> None:
    annotations = ingress_annotations(overlay)
    assert annotations["ssl-redirect"] == annotations["force-ssl-redirect"] == "true"
    assert annotations["proxy-request-buffering"] == "on"
    settings = Settings()
    limit_kib = (settings.max_files_per_request * settings.max_upload_bytes + 64 * 1024) // 1024
    assert annotations["proxy-body-size"] == f"{limit_kib}k" == _nginx_directive("client_max_body_size")
    rate, burst = (
        re.fullmatch(r"\$binary_remote_addr zone=\w+:\w+ rate=(\d+)r/s", _nginx_directive("limit_req_zone")).group(1),
        re.search(r"burst=(\d+)", _nginx_directive("limit_req")).group(1),
    )
    assert annotations["limit-rps"] == rate
    assert int(annotations["limit-rps"]) * int(annotations["limit-burst-multiplier"]) == int(burst)
    assert annotations["limit-connections"] == _nginx_directive("limit_conn").split()[1]
    assert int(annotations["proxy-read-timeout"]) > settings.predict_timeout_s


def test_the_controller_settings_time_out_slow_clients_and_answer_429() -> None:
    patch = yaml.safe_load((K8S / "ingress-nginx/controller-config.yaml").read_text())
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ingress-nginx-controller"}, **patch}
    validate_kubernetes(config_map, KUBERNETES_VERSIONS[-1])
    data = patch["data"]
    assert int(data["client-header-timeout"]) <= 10 and int(data["client-body-timeout"]) <= 10
    assert data["limit-req-status-code"] == data["limit-conn-status-code"] == "429"
    assert data["use-forwarded-headers"] == "false", "a client must not choose the address it is limited by"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_trusts_the_one_proxy_in_front_of_it(overlay: str) -> None:
    env = {entry["name"]: entry.get("value") for entry in app_containers(overlay)["gateway"]["env"]}
    assert env["PROXY_HOPS"] == "1"
    for name in ("worker", "trainer", "insights"):
        assert "PROXY_HOPS" not in {entry["name"] for entry in app_containers(overlay)[name]["env"]}


def test_new_secrets_makes_a_certificate_its_ca_verifies_and_takes_the_operators_own(tmp_path: Path) -> None:
    secret = next(s for s in new_secrets() if s["metadata"]["name"] == "slc-gateway-tls")
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "ca.crt", tmp_path / "tls.crt"], capture_output=True, timeout=30
    )
    assert verified.returncode == 0, verified.stderr
    own = subprocess.run(
        [str(K8S / "new-secrets.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "SLC_TLS_CERT": str(tmp_path / "tls.crt"),
            "SLC_TLS_KEY": str(tmp_path / "tls.key"),
        },
    )
    (tls,) = [doc for doc in yaml.safe_load_all(own.stdout) if doc and doc["metadata"]["name"] == "slc-gateway-tls"]
    assert base64.b64decode(tls["data"]["tls.crt"]) == (tmp_path / "tls.crt").read_bytes()
    assert "ca.crt" not in tls["data"]


# Pod Security "restricted", service-account tokens and egress

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
# The one pod that keeps its token: RabbitMQ 3.13's Kubernetes peer discovery asks the API
# server for the cluster's endpoints (deploy/k8s/base/rabbitmq.yaml).
TOKEN_NEEDED = {"RabbitmqCluster/slc-rabbitmq"}
RABBITMQ_POD_LABELS = {"app.kubernetes.io/name": RABBITMQ_CLUSTER}
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


@dataclasses.dataclass(frozen=True)
class PodTemplate:
    where: str
    labels: dict[str, str]
    spec: dict[str, Any]


def pod_templates(overlay: str) -> list[PodTemplate]:
    """Every pod the overlay makes: workloads' templates and the RabbitMQ operator's override."""
    templates = []
    for obj in rendered(overlay):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in WORKLOAD_KINDS:
            spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
            template = spec["template"]
            templates.append(PodTemplate(where, template["metadata"].get("labels", {}), template["spec"]))
        elif obj["kind"] == "RabbitmqCluster":
            # The operator merges this into its StatefulSet's template (user 999, fsGroup 0).
            template = obj["spec"].get("override", {}).get("statefulSet", {}).get("spec", {}).get("template", {})
            templates.append(PodTemplate(where, RABBITMQ_POD_LABELS, template.get("spec", {})))
    return templates


def egress_rules(overlay: str, labels: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The egress policies selecting a pod with `labels`, and the rules they allow together."""
    names, rules = [], []
    for name, policy in objects(overlay, "NetworkPolicy").items():
        spec = policy["spec"]
        if "Egress" in spec.get("policyTypes", []) and selects(spec["podSelector"], labels):
            names.append(name)
            rules += spec.get("egress", [])
    return names, rules


def allows(rules: list[dict[str, Any]], peer: dict[str, Any], port: int, protocol: str = "TCP") -> bool:
    return any(
        peer in rule.get("to", []) and {"protocol": protocol, "port": port} in rule.get("ports", []) for rule in rules
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_pod_security_restricted(overlay: str) -> None:
    templates = pod_templates(overlay)
    expected = {f"Deployment/{name}" for name in APP_PORTS} | {f"RabbitmqCluster/{RABBITMQ_CLUSTER}"}
    expected.add(f"Job/{BOOTSTRAP}")
    assert expected <= {template.where for template in templates}
    problems = [problem for template in templates for problem in restricted_violations(template.where, template.spec)]
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_without_a_writable_root_has_a_writable_tmp(overlay: str) -> None:
    for template in pod_templates(overlay):
        volumes = {volume["name"]: volume for volume in template.spec.get("volumes", [])}
        for container in template.spec["containers"]:
            if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
                continue
            mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{template.where}: {container['name']} has a read-only root and no /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]], template.where
    for name in APP_PORTS:
        assert app_containers(overlay)[name]["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_the_rabbitmq_override_uses_kubernetes_field_names() -> None:
    """The override is a partial pod template: validated as a pod, with the images filled in."""
    (template,) = [t for t in pod_templates("production") if t.where.startswith("RabbitmqCluster/")]
    spec = {
        **template.spec,
        **{
            kind: [{**container, "image": "rabbitmq"} for container in template.spec[kind]]
            for kind in ("initContainers", "containers")
        },
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rabbitmq-override"}, "spec": spec}
    validate_kubernetes(pod, KUBERNETES_VERSIONS[-1])


BROKEN_PODS = [
    ("no seccomp profile", {"securityContext": {"runAsNonRoot": True}}, "seccompProfile.type"),
    ("unconfined seccomp", {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, "seccompProfile"),
    ("root allowed", {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}, "runAsNonRoot"),
    ("host network", {"hostNetwork": True}, "spec.hostNetwork"),
    ("hostPath volume", {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "volume 'host'"),
    ("runs as root", {"securityContext": {"runAsUser": 0}}, "runAsUser must not be 0"),
]
BROKEN_CONTAINERS = [
    ("privileged", {"privileged": True}, "privileged"),
    ("escalation allowed", {"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation"),
    ("capabilities kept", {"capabilities": {"drop": []}}, "capabilities.drop"),
    ("capability added", {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}, "NET_ADMIN"),
    ("unmasked proc", {"procMount": "Unmasked"}, "procMount"),
]


@pytest.mark.parametrize(("case", "pod_change", "message"), BROKEN_PODS, ids=[case[0] for case in BROKEN_PODS])
def test_a_pod_breaking_a_restricted_rule_is_named(case: str, pod_change: dict[str, Any], message: str) -> None:
    spec = objects("local", "Deployment")["gateway"]["spec"]["template"]["spec"]
    assert restricted_violations("gateway", spec) == []
    broken = {**spec, **pod_change}
    problems = restricted_violations("Deployment/gateway", broken)
    assert any(message in problem and "Deployment/gateway" in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("case", "context_change", "message"), BROKEN_CONTAINERS, ids=[case[0] for case in BROKEN_CONTAINERS]
)
def test_a_container_breaking_a_restricted_rule_is_named(
    case: str, context_change: dict[str, Any], message: str
) -> None:
    spec = objects("local", "Deployment")["worker"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    broken_container = {**container, "securityContext": {**container["securityContext"], **context_change}}
    problems = restricted_violations("Deployment/worker", {**spec, "containers": [broken_container]})
    assert any(message in problem and "containers[worker]" in problem for problem in problems), problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespace_enforces_restricted(overlay: str) -> None:
    (namespace,) = objects(overlay, "Namespace").values()
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode
    assert re.fullmatch(r"v1\.(3\d|[4-9]\d)|latest", labels["pod-security.kubernetes.io/enforce-version"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_pod_mounts_a_service_account_token_but_the_one_that_needs_it(overlay: str) -> None:
    for template in pod_templates(overlay):
        expected = template.where in TOKEN_NEEDED
        assert template.spec.get("automountServiceAccountToken") is expected, (
            f"{template.where}: spec.automountServiceAccountToken must be {str(expected).lower()}"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_denies_egress_by_default_and_may_resolve_names(overlay: str) -> None:
    deny = objects(overlay, "NetworkPolicy")["default-deny-egress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Egress"] and "egress" not in deny
    for template in pod_templates(overlay):
        names, rules = egress_rules(overlay, template.labels)
        assert "default-deny-egress" in names and rules, f"{template.where}: no egress policy selects it"
        assert allows(rules, DNS_PEER, 53, "UDP") and allows(rules, DNS_PEER, 53), template.where
        for rule in rules:
            assert rule.get("to") and rule.get("ports"), f"{template.where}: an egress rule open to all ({names})"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_app_service_may_reach_the_broker_and_the_store(overlay: str) -> None:
    rabbitmq = {"podSelector": {"matchLabels": RABBITMQ_POD_LABELS}}
    store = (
        ({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "minio"}}}, 9000)
        if overlay == "local"
        else ({"ipBlock": {"cidr": "0.0.0.0/0"}}, 443)
    )
    for name in APP_PORTS:
        _, rules = egress_rules(overlay, {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "x"})
        assert allows(rules, rabbitmq, 5672), f"{name} cannot reach RabbitMQ"
        assert allows(rules, *store), f"{name} cannot reach the S3 service"
        internal = {
            port["port"] for rule in rules for peer in rule["to"] if "ipBlock" not in peer for port in rule["ports"]
        }
        assert internal == {53, 5672} | ({9000} if overlay == "local" else set()), name
    _, rules = egress_rules(overlay, RABBITMQ_POD_LABELS)
    assert allows(rules, rabbitmq, 25672), "RabbitMQ nodes cannot reach each other"
    if overlay == "local":
        _, rules = egress_rules(overlay, {"app.kubernetes.io/name": "minio"})
        assert [rule["to"] for rule in rules] == [[DNS_PEER]], "MinIO talks to nothing but DNS"


def ingress_peers(overlay: str, labels: dict[str, str], port: int) -> list[dict[str, Any]]:
    """Every peer the ingress policies selecting a pod with `labels` admit on TCP `port`."""
    peers = []
    for policy in objects(overlay, "NetworkPolicy").values():
        spec = policy["spec"]
        if "Ingress" in spec.get("policyTypes", []) and selects(spec["podSelector"], labels):
            for rule in spec.get("ingress", []):
                if {"protocol": "TCP", "port": port} in rule.get("ports", []):
                    peers += rule["from"]
    return peers


def admits(peer: dict[str, Any], labels: dict[str, str], namespace: str = NAMESPACE) -> bool:
    """Whether a NetworkPolicy peer (in namespace slc) admits a pod with `labels` in `namespace`."""
    if "ipBlock" in peer:
        return True
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        in_namespace = namespace == NAMESPACE
    return in_namespace and selects(peer.get("podSelector", {}), labels)


def pod_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "skin-lesion-classifier"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_bootstrap_job_may_reach_the_broker_its_management_api_and_the_store(overlay: str) -> None:
    rabbitmq = {"podSelector": {"matchLabels": RABBITMQ_POD_LABELS}}
    template = next(t for t in pod_templates(overlay) if t.where == f"Job/{BOOTSTRAP}")
    assert template.labels["app.kubernetes.io/name"] == BOOTSTRAP
    _, rules = egress_rules(overlay, template.labels)
    assert allows(rules, rabbitmq, 5672) and allows(rules, rabbitmq, 15672)
    if overlay == "local":
        assert allows(rules, {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "minio"}}}, 9000)
        assert any(
            admits(peer, template.labels) for peer in ingress_peers(overlay, {"app.kubernetes.io/name": "minio"}, 9000)
        )
    else:
        assert allows(rules, {"ipBlock": {"cidr": "0.0.0.0/0"}}, 443)
    internal = {
        port["port"] for rule in rules for peer in rule["to"] if "ipBlock" not in peer for port in rule["ports"]
    }
    assert internal == {53, 5672, 15672} | ({9000} if overlay == "local" else set())
    for port in (5672, 15672):
        assert any(admits(peer, template.labels) for peer in ingress_peers(overlay, RABBITMQ_POD_LABELS, port)), port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_app_pod_reaches_the_rabbitmq_management_api(overlay: str) -> None:
    """Only bootstrap (and the RabbitMQ operator, and the nodes themselves) may use port 15672."""
    peers = ingress_peers(overlay, RABBITMQ_POD_LABELS, 15672)
    for name in APP_PORTS:
        assert not [peer for peer in peers if admits(peer, pod_labels(name))], f"{name} is admitted to :15672"
        _, rules = egress_rules(overlay, pod_labels(name))
        assert not [rule for rule in rules if {"protocol": "TCP", "port": 15672} in rule["ports"]], name
    assert not [peer for peer in peers if admits(peer, {}, "keda")], "KEDA needs AMQP only"
    assert any(admits(peer, {}, "rabbitmq-system") for peer in peers), "the operator's post-deploy steps"
    # Prometheus still scrapes the nodes' metrics (rabbitmq_prometheus), on its own port.
    assert any(admits(peer, {}, "monitoring") for peer in ingress_peers(overlay, RABBITMQ_POD_LABELS, 15692))
