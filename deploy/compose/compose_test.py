"""`make compose-test`: the container deployment built, started, scaled and checked on this machine.

From empty volumes, in a compose project of its own (never the operator's `slc`):

1. installs Debian's docker.io, docker-compose and debootstrap when missing, starts dockerd when
   none runs (and stops only the one it started), builds every image (air-gapped by default:
   docker-compose.airgap.yml; COMPOSE_TEST_AIRGAP=0 uses the registry images of
   docker-compose.yml alone);
2. starts the stack with two workers and waits until bootstrap has succeeded and every container
   is healthy; from inside the gateway and a worker, with their own credentials, checks that
   deleting a model version, writing a dataset object and declaring or deleting a queue are
   refused, and that SeaweedFS's master, filer and volume ports are closed to them;
3. through the proxy (nginx, HTTPS verified against the run's own certificate authority) to the
   gateway: a synchronous and a ?wait=false prediction, a labelled upload, a quick retraining
   job to its gate decision, a promotion that both workers follow, insights;
4. through Prometheus's HTTP API: every scrape target up, every alert rule and every Grafana
   panel query evaluated without error, and which panels return data;
5. the proxy against slow and greedy clients (proxy_checks.py): HTTP redirects to HTTPS, a
   body over the limit gets 413 unseen by the gateway, 256 trickling connections held for 30 s
   while an honest client is answered within 3 s every time, a flood from one address gets 429;
   eight bomb PNGs, a 300 MiB part and a fill-byte JPEG refused with the gateway barely growing;
6. scales the workers 2 -> 3 -> 1 while 8 clients keep predicting, counting failed requests;
7. `down -v` at the end, also after a failure or Ctrl-C.

Standard library only, so it runs before any virtualenv exists. Progress goes to stderr; the
last line on stdout is JSON (build_s, image_mb, ready_s, predictions_ok, targets_up,
panels_with_data, panels_total, scale_failures, proxy_*, ...). Exit status 0 only if every check passed.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import proxy_checks

REPO = Path(__file__).resolve().parents[2]
PROJECT = "slc-compose-test"
IMAGE_TAG = "compose-test"
DASHBOARD = REPO / "deploy/grafana/dashboards/skin-lesion-classifier.json"
OUTPUT_DIR = REPO / "test-output/compose-test"
SERVING_IMAGE_LIMIT_MB = 500

# Bounds of every wait (seconds).
COMMAND_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 3600  # a cold build downloads TensorFlow
HEALTHY_TIMEOUT_S = 300
PREDICTION_TIMEOUT_S = 60
TRAINING_TIMEOUT_S = 900
PROMOTION_TIMEOUT_S = 120
INSIGHTS_TIMEOUT_S = 180
PROMETHEUS_TIMEOUT_S = 120
HTTP_TIMEOUT_S = 30
SCALE_PHASE_S = 15  # traffic before, between and after the scaling steps
SCALE_CLIENTS = 8
T = TypeVar("T")


class CheckFailed(Exception):
    """A check of the running stack did not hold."""


class NotYet(Exception):
    """A condition waited for does not hold yet (wait_for tries again, and reports the last one)."""


def log(message: str) -> None:
    print(f"[compose-test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 1.0) -> T:
    """Call `probe` until it returns something other than None or False; CheckFailed after `timeout_s`.

    Connection errors, unreadable answers and NotYet are retried; CheckFailed ends the wait at once.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result is not None and result is not False:
                return result
        except (OSError, ValueError, NotYet) as error:
            last_error = error
        time.sleep(interval_s)
    detail = f": {last_error}" if last_error else ""
    raise CheckFailed(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")


def run(command: list[str], *, timeout_s: float = COMMAND_TIMEOUT_S, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; its output, or CheckFailed with the output's tail."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO)
    except subprocess.TimeoutExpired as error:
        raise CheckFailed(f"{' '.join(command)} took longer than {timeout_s:.0f} s") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise CheckFailed(f"{' '.join(command)} exited with {result.returncode}:\n{output}")
    return result.stdout


# --- the machine: packages and the Docker engine ------------------------------------------------

# Command -> the Debian package that provides it.
REQUIRED_COMMANDS = {"docker": "docker.io", "dockerd": "docker.io", "docker-compose": "docker-compose"}


def _has_command(name: str) -> bool:
    return shutil.which(name) is not None or Path("/usr/sbin", name).exists()


def install_missing_packages(airgap: bool) -> list[str]:
    required = {**REQUIRED_COMMANDS, **({"debootstrap": "debootstrap"} if airgap else {})}
    packages = sorted({package for command, package in required.items() if not _has_command(command)})
    if packages:
        log(f"installing {', '.join(packages)} from Debian")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run([*sudo, "apt-get", "update", "-qq"], timeout_s=600, env=env)
        run([*sudo, "apt-get", "install", "-y", "-qq", *packages], timeout_s=900, env=env)
    return packages


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def docker_engine() -> Iterator[None]:
    """The running engine, or one started here and stopped again at the end."""
    if docker_answers():
        yield
        return
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    log("no Docker engine answers: starting dockerd")
    with open(OUTPUT_DIR / "dockerd.log", "ab") as daemon_log:
        # Its own session: a Ctrl-C meant for this script must not stop it before `down -v`.
        daemon = subprocess.Popen(
            ["dockerd"], stdin=subprocess.DEVNULL, stdout=daemon_log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for("dockerd to answer", lambda: daemon.poll() is None and docker_answers(), 60)
        yield
    finally:
        log("stopping the dockerd started here")
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)


# --- test data: PNG images without third-party packages ---------------------------------------


def png(seed: int, *, brightness: int, size: int = 96) -> bytes:
    """A noisy RGB PNG around `brightness` (0-255): classes differ, images differ by seed."""
    rng = random.Random(seed)
    rows = b"".join(
        b"\x00" + bytes(max(0, min(255, brightness + rng.randint(-60, 60))) for _ in range(size * 3))
        for _ in range(size)
    )
    return proxy_checks.rgb_png(size, size, zlib.compress(rows))


CLASS_BRIGHTNESS = {"benign": 170, "malignant": 80}


def write_dataset(root: Path, per_class: int = 12) -> None:
    """{train,test}/{benign,malignant}/ PNGs, readable by the containers' unprivileged user."""
    for split_index, split in enumerate(("train", "test")):
        for label, brightness in CLASS_BRIGHTNESS.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                path = folder / f"{label}-{index}.png"
                path.write_bytes(png(split_index * 10_000 + index * 7 + brightness, brightness=brightness))
                path.chmod(0o644)
    for folder in [root, *root.rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o755)


# --- HTTP ----------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = HTTP_TIMEOUT_S,
) -> Response:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return Response(answer.status, answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read())


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (fields or {}).items()
    ]
    for filename, data in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        parts.append(head.encode() + b"Content-Type: image/png\r\n\r\n" + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the compose project -------------------------------------------------------------------------


@dataclass
class Stack:
    """One compose project of this test, with its own env file, ports and data folder."""

    airgap: bool
    workdir: Path
    # Another driver (compose_cluster_test.py) runs its own project with more compose files.
    project: str = PROJECT
    extra_compose_files: tuple[str, ...] = ()
    output_dir: Path = OUTPUT_DIR
    env_file: Path = field(init=False)
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.env_file = self.workdir / "compose.env"
        dataset = self.workdir / "dataset"
        write_dataset(dataset)
        # The proxy's certificate, made by new-env.sh (new-cert.sh) in the run's own folder.
        tls_dir = self.workdir / "tls"
        new_env = [str(REPO / "deploy/compose/new-env.sh"), str(self.env_file)]
        run(new_env, env={**os.environ, "SLC_TLS_DIR": str(tls_dir)})
        # Every HTTPS request of this process (urllib's urlopen) verifies the proxy against that CA.
        self.tls_context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
        urllib.request.install_opener(
            urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.tls_context))
        )
        self.settings = dict(
            line.split("=", 1) for line in self.env_file.read_text().splitlines() if re.match(r"^\w+=", line)
        )
        overrides = {
            "COMPOSE_PROJECT_NAME": self.project,
            "SLC_IMAGE_TAG": IMAGE_TAG,
            "SLC_DATA_DIR": str(dataset),
            "SLC_CA_BUNDLE": self._ca_bundle(),
            "TRAINING_PROFILE": "quick",
            # Several retention sweeps during the run, so the dashboard's sweep panels have data.
            "RETENTION_SWEEP_INTERVAL_S": "20",
            # Free ports on the loopback interface: nothing of this machine is disturbed.
            "SLC_HTTPS_PUBLISH": f"127.0.0.1:{self.https_port}",
            "SLC_HTTP_PUBLISH": f"127.0.0.1:{self.http_port}",
            "SLC_PROMETHEUS_PUBLISH": f"127.0.0.1:{self.prometheus_port}",
            "SLC_RABBITMQ_UI_PUBLISH": f"127.0.0.1:{free_port()}",
            "SLC_MINIO_CONSOLE_PUBLISH": f"127.0.0.1:{free_port()}",
            "SLC_GRAFANA_PUBLISH": f"127.0.0.1:{free_port()}",
        }
        self.settings.update(overrides)
        self.env_file.write_text("".join(f"{name}={value}\n" for name, value in self.settings.items()))
        # Values in the caller's environment would win over the env file.
        self.env = {name: value for name, value in os.environ.items() if name not in self.settings}
        self.env.update({"DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"})

    @staticmethod
    def _ca_bundle() -> str:
        """This machine's CA bundle, copied into the build context, so builds work behind TLS interception."""
        configured = os.environ.get("SLC_CA_BUNDLE")
        if configured:
            return configured
        host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if not host_bundle.is_file():
            return "deploy/images/ca/none.pem"
        shutil.copyfile(host_bundle, REPO / "deploy/images/ca/host.pem")
        return "deploy/images/ca/host.pem"

    @property
    def gateway(self) -> str:
        """The gateway as clients reach it: through the proxy, over HTTPS."""
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def write_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings['WRITE_TOKEN']}"}

    def compose(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        files = ["-f", "docker-compose.yml"] + (["-f", "docker-compose.airgap.yml"] if self.airgap else [])
        files += [argument for name in self.extra_compose_files for argument in ("-f", name)]
        command = ["docker-compose", "--env-file", str(self.env_file), "-p", self.project, *files, *args]
        return run(command, timeout_s=timeout_s, env=self.env)

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """`docker inspect` of this project's containers (of one service), running or not."""
        labels = [f"label=com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"label=com.docker.compose.service={service}")
        filters = [argument for label in labels for argument in ("--filter", label)]
        ids = run(["docker", "ps", "-aq", *filters]).split()
        return json.loads(run(["docker", "inspect", *ids])) if ids else []

    def down(self) -> None:
        log("down -v")
        try:
            self.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout_s=240)
        except CheckFailed as error:
            log(f"down -v failed: {error}")

    def dump_logs(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(CheckFailed):
            (self.output_dir / "compose.log").write_text(self.compose("logs", "--no-color", "--tail", "300"))
            log(f"container logs: {self.output_dir / 'compose.log'}")


def health(container: dict[str, Any]) -> str:
    state = container["State"]
    return state.get("Health", {}).get("Status", state["Status"]) if state["Status"] == "running" else state["Status"]


# Services that run once at `up` and exit: they must have exited with 0, and are not counted.
ONE_SHOT_SERVICES = ("bootstrap",)


def wait_healthy(stack: Stack, expected: dict[str, int], timeout_s: float = HEALTHY_TIMEOUT_S) -> None:
    """Until the project runs exactly `expected` (service -> containers), each one healthy, and
    every one-shot service has exited successfully."""

    def probe() -> bool:
        containers = []
        for container in stack.containers():
            if container["Config"]["Labels"]["com.docker.compose.service"] not in ONE_SHOT_SERVICES:
                containers.append(container)
            elif container["State"]["Status"] == "exited" and container["State"]["ExitCode"] != 0:
                raise CheckFailed(f"{container['Name'].lstrip('/')} exited with {container['State']['ExitCode']}")
        counts: dict[str, int] = {}
        for container in containers:
            if health(container) == "healthy":
                service = container["Config"]["Labels"]["com.docker.compose.service"]
                counts[service] = counts.get(service, 0) + 1
        if counts != expected or len(containers) != sum(expected.values()):
            states = sorted(f"{c['Name'].lstrip('/')}={health(c)}" for c in containers)
            raise NotYet(", ".join(states))
        return True

    wait_for(f"healthy containers {expected}", probe, timeout_s, interval_s=2)


# --- checks through the gateway -----------------------------------------------------------------


def predict(stack: Stack, images: list[tuple[str, bytes]], *, wait: bool = True) -> Response:
    body, content_type = multipart(images)
    url = f"{stack.gateway}/api/v1/predictions" + ("" if wait else "?wait=false")
    return http("POST", url, body=body, headers={"Content-Type": content_type})


def check_sync_prediction(stack: Stack, seed: int) -> dict[str, Any]:
    answer = predict(stack, [(f"sync-{seed}.png", png(seed, brightness=120))])
    result = answer.json()
    if answer.status != 200 or result.get("status") != "done" or result.get("label") not in CLASS_BRIGHTNESS:
        raise CheckFailed(f"synchronous prediction: {answer.status} {result}")
    return result


def check_async_predictions(stack: Stack) -> int:
    answer = predict(stack, [(f"async-{i}.png", png(500 + i, brightness=140)) for i in range(2)], wait=False)
    if answer.status != 202:
        raise CheckFailed(f"?wait=false answered {answer.status}: {answer.body[:300]!r}")
    ids = [item["id"] for item in answer.json()["predictions"]]

    def done(prediction_id: str) -> dict[str, Any] | None:
        polled = http("GET", f"{stack.gateway}/api/v1/predictions/{prediction_id}").json()
        if polled.get("status") == "pending":
            return None
        if polled.get("status") != "done":
            raise CheckFailed(f"polled prediction {prediction_id}: {polled}")
        return polled

    for prediction_id in ids:
        wait_for(f"prediction {prediction_id}", lambda prediction_id=prediction_id: done(prediction_id), 60, 0.5)
    return len(ids)


def check_labelled_upload(stack: Stack) -> None:
    files = [(f"upload-{i}.png", png(900 + i, brightness=CLASS_BRIGHTNESS["benign"])) for i in range(2)]
    body, content_type = multipart(files, {"label": "benign"})
    url = f"{stack.gateway}/api/v1/datasets/uploads"
    refused = http("POST", url, body=body, headers={"Content-Type": content_type})
    if refused.status != 401:
        raise CheckFailed(f"an upload without the write token answered {refused.status}, not 401")
    answer = http("POST", url, body=body, headers={"Content-Type": content_type, **stack.write_headers})
    report = answer.json()
    if answer.status != 200 or report.get("added") != 2:
        raise CheckFailed(f"labelled upload: {answer.status} {report}")


def check_training(stack: Stack) -> dict[str, Any]:
    """A quick retraining run followed to its gate decision; the final job record."""
    body = json.dumps({"epochs": 1}).encode()
    headers = {"Content-Type": "application/json", **stack.write_headers}
    answer = http("POST", f"{stack.gateway}/api/v1/training-jobs", body=body, headers=headers)
    if answer.status != 202:
        raise CheckFailed(f"training request answered {answer.status}: {answer.body[:300]!r}")
    job_id = answer.json()["id"]

    def decided() -> dict[str, Any] | None:
        job = http("GET", f"{stack.gateway}/api/v1/training-jobs/{job_id}").json()
        if job["status"] == "failed":
            raise CheckFailed(f"training job failed: {job.get('error')}")
        return job if job["status"] in {"promoted", "rejected"} else None

    job = wait_for(f"training job {job_id} to reach its gate decision", decided, TRAINING_TIMEOUT_S, 3)
    log(f"training job {job_id}: {job['status']} (candidate {job['candidate_version']})")
    return job


def worker_versions(stack: Stack) -> dict[str, str | None]:
    """Worker container -> the model version its /metrics says it serves."""
    read_metrics = (
        "import urllib.request\n"
        "print(urllib.request.urlopen('http://127.0.0.1:9101/metrics', timeout=5).read().decode())"
    )
    versions = {}
    for container in stack.containers("worker"):
        text = run(["docker", "exec", container["Id"], "python", "-c", read_metrics], timeout_s=30)
        served = re.findall(r'^slc_model_info\{version="([^"]+)"\} 1\.0$', text, re.MULTILINE)
        versions[container["Name"].lstrip("/")] = served[0] if len(served) == 1 else None
    return versions


def check_promotion(stack: Stack, job: dict[str, Any], previous: str) -> str:
    """Promote a version other than the serving one; every worker must switch to it."""
    target = job["candidate_version"] if job["status"] == "rejected" else previous
    body = json.dumps({"reason": "make compose-test"}).encode()
    headers = {"Content-Type": "application/json", **stack.write_headers}
    answer = http("POST", f"{stack.gateway}/api/v1/models/{target}/promote", body=body, headers=headers)
    if answer.status != 200:
        raise CheckFailed(f"promoting {target} answered {answer.status}: {answer.body[:300]!r}")

    def followed() -> bool:
        versions = worker_versions(stack)
        return len(versions) == 2 and set(versions.values()) == {target}

    wait_for(f"both workers to serve {target}", followed, PROMOTION_TIMEOUT_S, 2)
    served = check_sync_prediction(stack, seed=4242)["model_version"]
    if served != target:
        raise CheckFailed(f"after promoting {target} a prediction came from {served}")
    return target


# Run inside a service's container with its own credentials (its environment); prints JSON.
STORE_BOUNDARY_PROBE = """
import json, socket
from shared.errors import StorageAccessDenied
from shared.serving import registry
from shared.settings import Settings
from shared.storage import create_store
store = create_store(Settings.from_env())
version = registry.production_version(store)
card = f"models/versions/{version}/card.json"
outcome = {}
for name, action in {
    "delete_model_version": lambda: store.delete(card),
    "write_dataset_object": lambda: store.put("datasets/probe/train/benign/probe.png", b"forged"),
}.items():
    try:
        action()
        outcome[name] = "allowed"
    except StorageAccessDenied:
        outcome[name] = "refused"
outcome["model_version_intact"] = store.exists(card)
for name, port in {"s3": 9000, "master": 9333, "filer": 8888, "volume": 8080}.items():
    try:
        socket.create_connection(("minio", port), timeout=3).close()
        outcome[f"{name}_port"] = "open"
    except OSError:
        outcome[f"{name}_port"] = "closed"
print(json.dumps(outcome))
"""
BROKER_BOUNDARY_PROBE = """
import json
from shared.messaging import admin
from shared.settings import Settings
url = Settings.from_env().amqp_url.split(",")[0]
outcome = {}
for name, action in {
    "declare_queue": lambda channel: channel.queue_declare("probe-rogue", durable=True),
    "delete_queue": lambda channel: channel.queue_delete("predict"),
}.items():
    try:
        action(admin.bare_channel(url))
        outcome[name] = "allowed"
    except Exception as error:
        code = admin.refusal_code(error)
        if code is None:
            raise
        outcome[name] = "refused" if code == 403 else f"closed {code}"
print(json.dumps(outcome))
"""


def run_in(stack: Stack, service: str, program: str) -> dict[str, Any]:
    container = stack.containers(service)[0]
    output = run(["docker", "exec", container["Id"], "python", "-c", program], timeout_s=60)
    return json.loads(output.strip().splitlines()[-1])


def check_least_privilege(stack: Stack) -> int:
    """Each boundary tried from inside the container it should stop; the number checked."""
    store = run_in(stack, "gateway", STORE_BOUNDARY_PROBE)
    expected_store = {
        "delete_model_version": "refused",
        "write_dataset_object": "refused",
        "model_version_intact": True,
        "s3_port": "open",
        "master_port": "closed",
        "filer_port": "closed",
        "volume_port": "closed",
    }
    if not stack.airgap:  # MinIO has no master, filer or volume ports to close
        expected_store = {k: v for k, v in expected_store.items() if not k.endswith("_port") or k == "s3_port"}
        store = {k: v for k, v in store.items() if k in expected_store}
    if store != expected_store:
        raise CheckFailed(f"the gateway's store credentials or network reach too far: {store}")
    broker = run_in(stack, "worker", BROKER_BOUNDARY_PROBE)
    if broker != {"declare_queue": "refused", "delete_queue": "refused"}:
        raise CheckFailed(f"the worker's broker user may configure queues: {broker}")
    return len(expected_store) + len(broker)


def check_insights(stack: Stack) -> None:
    def answered() -> bool:
        answer = http("GET", f"{stack.gateway}/api/v1/insights")
        return answer.status == 200 and answer.json().get("snapshot") is not None

    wait_for("insights to answer with a snapshot", answered, INSIGHTS_TIMEOUT_S, 3)


# --- checks through Prometheus -------------------------------------------------------------------


def prometheus_get(stack: Stack, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    answer = http("GET", f"{stack.prometheus}{path}" + (f"?{query}" if query else ""))
    payload = answer.json()
    if answer.status != 200 or payload.get("status") != "success":
        raise CheckFailed(f"Prometheus {path} {params}: {answer.status} {payload.get('error', payload)}")
    return payload["data"]


def check_targets(stack: Stack, workers: int) -> int:
    """Every active target up, each job present, one worker target per replica; how many are up."""
    expected_jobs = {"gateway", "trainer", "insights", "rabbitmq", "prometheus", "worker"}

    def all_up() -> int | None:
        targets = prometheus_get(stack, "/api/v1/targets", state="active")["activeTargets"]
        jobs = [target["labels"]["job"] for target in targets]
        if any(target["health"] != "up" for target in targets) or set(jobs) != expected_jobs:
            return None
        return len(targets) if jobs.count("worker") == workers else None

    return wait_for("every Prometheus target to be up", all_up, PROMETHEUS_TIMEOUT_S, 3)


def check_alert_rules(stack: Stack) -> int:
    """Every alert rule loaded, evaluated by Prometheus without error, and its expression queryable."""

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [rule for group in prometheus_get(stack, "/api/v1/rules")["groups"] for rule in group["rules"]]
        broken = [f"{rule['name']}: {rule.get('lastError')}" for rule in rules if rule["health"] == "err"]
        if broken:
            raise CheckFailed(f"alert rules fail to evaluate: {broken}")
        return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

    rules = wait_for("every alert rule to be evaluated", evaluated, PROMETHEUS_TIMEOUT_S, 3)
    for rule in rules:
        prometheus_get(stack, "/api/v1/query", query=rule["query"])
    return len(rules)


def grafana_query(expr: str, range_s: float) -> str:
    """A panel query as Grafana sends it: the dashboard's variables and interval macros expanded."""
    rate_interval = "1m"  # Grafana's $__rate_interval for a 15 s scrape interval: 4 x 15 s
    range_text = f"{max(60, math.ceil(range_s))}s"
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range_text)
        .replace('"$route"', '".*"')  # the route variable's "All"
    )


def _has_finite_sample(data: dict[str, Any]) -> bool:
    if data["resultType"] == "scalar":
        return math.isfinite(float(data["result"][1]))
    return any(math.isfinite(float(series["value"][1])) for series in data["result"])


def check_dashboard(stack: Stack, range_s: float) -> tuple[int, int, list[str]]:
    """Every panel query evaluated without error: (panels with data, panels, titles without data)."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])] if p["type"] != "row"]
    for variable in dashboard["templating"]["list"]:
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()
        if not prometheus_get(stack, f"/api/v1/label/{label}/values", **{"match[]": metric}):
            raise CheckFailed(f"dashboard variable {variable['name']} has no values")
    empty = []
    for panel in panels:
        queries = [grafana_query(target["expr"], range_s) for target in panel["targets"]]
        results = [prometheus_get(stack, "/api/v1/query", query=query) for query in queries]
        if not any(_has_finite_sample(data) for data in results):
            empty.append(panel["title"])
    return len(panels) - len(empty), len(panels), empty


# --- the proxy against slow and greedy clients (proxy_checks.py) -----------------------------------


def gateway_metrics(stack: Stack) -> str:
    """The gateway's /metrics, read inside its container (the proxy does not serve them)."""
    (container,) = stack.containers("gateway")
    read_metrics = (
        "import urllib.request\n"
        "print(urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=5).read().decode())"
    )
    return run(["docker", "exec", container["Id"], "python", "-c", read_metrics], timeout_s=30)


def gateway_posts(stack: Stack) -> float:
    """POST requests the gateway has answered, whatever their route and status."""
    samples = re.findall(r"^slc_http_requests_total\{([^}]*)\} (\S+)$", gateway_metrics(stack), re.MULTILINE)
    return sum(float(value) for labels, value in samples if 'method="POST"' in labels)


def gateway_rss(stack: Stack) -> int:
    """Resident bytes of every process in the gateway's container (gunicorn's master and workers)."""
    (container,) = stack.containers("gateway")
    read_rss = (
        "import glob\n"
        "total = 0\n"
        "for path in glob.glob('/proc/[0-9]*/status'):\n"
        "    try:\n"
        "        lines = open(path).read().splitlines()\n"
        "    except OSError:\n"
        "        continue\n"
        "    total += sum(int(line.split()[1]) for line in lines if line.startswith('VmRSS:'))\n"
        "print(total * 1024)"
    )
    return int(run(["docker", "exec", container["Id"], "python", "-c", read_rss], timeout_s=30).strip())


def proxy_endpoint(stack: Stack) -> proxy_checks.ProxyEndpoint:
    # The slow clients run in the insights container: it has Python, its own address on the
    # stack's network, and no part in answering the honest client's requests.
    (insights,) = stack.containers("insights")

    def prediction_body(seed: int) -> tuple[bytes, str]:
        return multipart([(f"honest-{seed}.png", png(70_000 + seed, brightness=130))])

    return proxy_checks.ProxyEndpoint(
        https_port=stack.https_port,
        http_port=stack.http_port,
        context=stack.tls_context,
        exec_in_stack=proxy_checks.run_in_container(insights["Id"]),
        gateway_posts=lambda: gateway_posts(stack),
        prediction_body=prediction_body,
        gateway_rss=lambda: gateway_rss(stack),
    )


# --- scaling under load ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


def predict_in_a_loop(
    stack: Stack, client: int, stop: threading.Event, result: LoadResult, lock: threading.Lock
) -> None:
    """One client sending synchronous predictions back to back until `stop`."""
    sent = 0
    while not stop.is_set():
        sent += 1
        try:
            answer = predict(stack, [(f"load-{client}-{sent}.png", png(client * 100_000 + sent, brightness=128))])
            failure = None if answer.status == 200 and answer.json().get("status") == "done" else f"{answer.status}"
        except (OSError, ValueError) as error:
            failure = f"{type(error).__name__}: {error}"
        with lock:
            if failure is None:
                result.ok += 1
            else:
                result.failures.append(failure)


def measure_new_worker_ready_s(stack: Stack, before: set[str]) -> float:
    """Seconds from a new worker container's start to its first ready /readyz."""
    (new,) = [c for c in stack.containers("worker") if c["Id"] not in before]
    probe = (
        "import sys, urllib.request\n"
        "try: urllib.request.urlopen('http://127.0.0.1:9101/readyz', timeout=2)\n"
        "except Exception: sys.exit(1)"
    )

    def ready() -> float | None:
        code = subprocess.run(["docker", "exec", new["Id"], "python", "-c", probe], capture_output=True, timeout=30)
        return time.time() if code.returncode == 0 else None

    ready_at = wait_for("the new worker to be ready", ready, 60, 0.25)
    started = run(["docker", "inspect", "-f", "{{.State.StartedAt}}", new["Id"]]).strip()
    return ready_at - _docker_time(started)


def _docker_time(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as a Unix time."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{fraction or 0}")


def scale_under_load(stack: Stack) -> tuple[LoadResult, float]:
    """Workers 2 -> 3 -> 1 while SCALE_CLIENTS clients predict; their results and a new worker's start-up time."""
    result, lock, stop = LoadResult(), threading.Lock(), threading.Event()
    clients = [
        threading.Thread(target=predict_in_a_loop, args=(stack, n, stop, result, lock), daemon=True)
        for n in range(SCALE_CLIENTS)
    ]
    for client in clients:
        client.start()
    try:
        time.sleep(SCALE_PHASE_S)
        before = {c["Id"] for c in stack.containers("worker")}
        log("scaling workers to 3")
        stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "worker=3", "worker")
        worker_ready_s = measure_new_worker_ready_s(stack, before)
        wait_healthy(stack, expected_services(stack, workers=3))
        time.sleep(SCALE_PHASE_S)
        log("scaling workers to 1")
        stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "worker=1", "worker", timeout_s=180)
        wait_healthy(stack, expected_services(stack, workers=1))
        time.sleep(SCALE_PHASE_S)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=HTTP_TIMEOUT_S + 5)
    return result, worker_ready_s


def expected_services(stack: Stack, workers: int) -> dict[str, int]:
    services = {"gateway": 1, "worker": workers, "trainer": 1, "insights": 1, "rabbitmq": 1, "minio": 1}
    services.update(prometheus=1, proxy=1)
    if not stack.airgap:
        services["grafana"] = 1
    return services


# --- the run ------------------------------------------------------------------------------------------


def build(stack: Stack) -> float:
    started = time.monotonic()
    if stack.airgap:
        log("base images: debootstrap + docker import (skipped when present), Debian's Python")
        run([str(REPO / "deploy/images/build-bases.sh")], timeout_s=BUILD_TIMEOUT_S)
    log("docker-compose build")
    stack.compose("build", timeout_s=BUILD_TIMEOUT_S)
    return time.monotonic() - started


# Service -> the name its image has in the report.
IMAGE_ROLES = {
    "gateway": "serving",
    "trainer": "trainer",
    "rabbitmq": "rabbitmq",
    "minio": "s3",
    "prometheus": "prometheus",
    "proxy": "proxy",
}


def image_sizes(stack: Stack) -> dict[str, int]:
    """Megabytes of each image the running stack uses (the serving one at most SERVING_IMAGE_LIMIT_MB)."""
    sizes = {}
    for container in stack.containers():
        role = IMAGE_ROLES.get(container["Config"]["Labels"]["com.docker.compose.service"])
        if role:
            size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", container["Image"]]).strip())
            sizes[role] = round(size / 1e6)
    if sizes["serving"] > SERVING_IMAGE_LIMIT_MB:
        raise CheckFailed(f"the serving image is {sizes['serving']} MB, over {SERVING_IMAGE_LIMIT_MB} MB")
    return sizes


def exercise(stack: Stack, report: dict[str, Any]) -> None:
    """Everything after the build; fills `report` as it goes, so a failure still reports what passed."""
    report["build_s"] = round(build(stack), 1)
    log(f"built in {report['build_s']} s")
    stack.down()  # leftovers of an interrupted earlier run
    started = time.monotonic()
    stack.compose("up", "-d", "--scale", "worker=2", timeout_s=600)
    wait_healthy(stack, expected_services(stack, workers=2))
    report["ready_s"] = round(time.monotonic() - started, 1)
    report["image_mb"] = image_sizes(stack)
    log(f"every container healthy after {report['ready_s']} s; images {report['image_mb']} MB")

    first = check_sync_prediction(stack, seed=1)
    predictions = 1 + check_async_predictions(stack)
    report["predictions_ok"] = predictions
    check_labelled_upload(stack)
    job = check_training(stack)
    report["training"] = job["status"]
    report["promoted"] = check_promotion(stack, job, previous=first["model_version"])
    predictions += 1
    check_insights(stack)
    report["predictions_ok"] = predictions
    log("gateway checks passed")
    report["least_privilege_checks"] = check_least_privilege(stack)
    log(f"least privilege: {report['least_privilege_checks']} boundaries hold from inside the containers")

    report["targets_up"] = check_targets(stack, workers=2)
    report["alert_rules_ok"] = check_alert_rules(stack)
    log(f"{report['targets_up']} targets up, {report['alert_rules_ok']} alert rules evaluated")

    log("proxy: redirect, body limit, slow clients for 30 s beside an honest one, a flood")
    proxy_report = proxy_checks.check_proxy(proxy_endpoint(stack))
    report.update({f"proxy_{name}": value for name, value in proxy_report.items()})
    log(f"proxy checks passed: {proxy_report}")

    load, worker_ready_s = scale_under_load(stack)
    report["worker_ready_s"] = round(worker_ready_s, 1)
    report["scale_predictions_ok"] = load.ok
    report["scale_failures"] = len(load.failures)
    report["predictions_ok"] = predictions + load.ok
    log(f"scaling 2 -> 3 -> 1 under load: {load.ok} answered, {len(load.failures)} failed {load.failures[:5]}")

    with_data, total, empty = check_dashboard(stack, range_s=time.monotonic() - started)
    report.update(panels_with_data=with_data, panels_total=total)
    if empty:
        report["panels_without_data"] = empty
    log(f"dashboard: {with_data} of {total} panels return data")
    if load.failures:
        raise CheckFailed(f"{len(load.failures)} requests failed while scaling: {load.failures[:10]}")
    # Every panel shows a value in healthy operation: an operator cannot tell "no data" from a
    # metric gone missing (the 5xx ratios count no errors as 0, not as nothing).
    if empty:
        raise CheckFailed(f"panels without data after the traffic: {empty}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_reported(
    make_stack: Callable[[Path], Stack],
    exercise_stack: Callable[[Stack, dict[str, Any]], None],
    report: dict[str, Any],
    *,
    airgap: bool,
) -> int:
    """Install what is missing, start the engine if needed, exercise the stack and always take
    it down (`down -v`, also on failure, Ctrl-C or SIGTERM); the last line printed is `report`."""
    started = time.monotonic()
    # SIGTERM (a CI timeout) takes the same way out as Ctrl-C: through `down -v`.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report["installed"] = install_missing_packages(airgap)
        with docker_engine(), tempfile.TemporaryDirectory(prefix="slc-compose-") as workdir:
            stack = make_stack(Path(workdir))
            try:
                exercise_stack(stack, report)
                report["ok"] = True
            except BaseException:
                stack.dump_logs()
                raise
            finally:
                stack.down()
    except (CheckFailed, proxy_checks.ProxyCheckFailed) as error:
        report["error"] = str(error)[:2000]
        log(f"FAILED: {error}")
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        log("interrupted")
    except Exception as error:  # anything unexpected still ends with the JSON line
        report["error"] = f"{type(error).__name__}: {error}"[:2000]
        log(f"FAILED: {report['error']}")
    report["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


def main() -> int:
    airgap = os.environ.get("COMPOSE_TEST_AIRGAP", "1") != "0"
    return run_reported(
        lambda workdir: Stack(airgap=airgap, workdir=workdir), exercise, {"ok": False, "airgap": airgap}, airgap=airgap
    )


if __name__ == "__main__":
    sys.exit(main())
