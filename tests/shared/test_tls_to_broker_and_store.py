"""AMQP and S3 over TLS, against real servers: a RabbitMQ node with a TLS listener and SeaweedFS
serving S3 over HTTPS, both started here with a throwaway certificate (deploy/compose/new-cert.sh).

What AMQP_CA_FILE and S3_CA_FILE promise (docs/proxy-and-tls.md, "TLS"): with the CA that signed
the server's certificate the services connect and work; with another CA they refuse the server.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.gateway.broker_client import BrokerClient
from shared.errors import BrokerUnavailable, ConfigurationError, StorageUnavailable
from shared.messaging.rabbitmq import close_quietly, connect, connection_parameters
from shared.messaging.topology import Topology
from shared.settings import REPO_ROOT, Settings
from shared.storage import create_store
from tests.support.rabbitmq_node import RabbitNode
from tests.support.seaweedfs import SeaweedS3

NEW_CERT = REPO_ROOT / "deploy/compose/new-cert.sh"


def new_certificate(folder: Path) -> Path:
    """A CA and a server certificate for localhost and 127.0.0.1 in `folder` (as compose makes them)."""
    subprocess.run([str(NEW_CERT), str(folder)], check=True, capture_output=True, timeout=60)
    return folder


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_certificate(tmp_path_factory.mktemp("tls") / "server")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA of another, unrelated certificate: it vouches for nothing these servers present."""
    return new_certificate(tmp_path_factory.mktemp("tls") / "other") / "ca.pem"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[RabbitNode]:
    node = RabbitNode(tmp_path_factory.mktemp("rabbitmq-tls"), tls_dir=tls_dir)
    try:
        node.start()
        yield node
    finally:
        node.kill()


@pytest.fixture(scope="module")
def tls_s3(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs-tls"), tls_dir=tls_dir)
    try:
        server.start()
        yield server
    finally:
        server.kill()


# --- AMQP -----------------------------------------------------------------------------------------


def test_an_amqps_url_reaches_a_broker_whose_certificate_the_ca_file_vouches_for(
    tls_broker: RabbitNode, tls_dir: Path
) -> None:
    connection = connect(tls_broker.amqps_url, timeout_s=10, ca_file=tls_dir / "ca.pem")
    try:
        channel = connection.channel()
        queue = f"tls-{uuid.uuid4().hex[:8]}"
        channel.queue_declare(queue, exclusive=True)
        channel.basic_publish("", queue, b"over TLS")
        _, _, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"over TLS"
        # The broker's view: this connection came in over TLS.
        assert "true" in tls_broker.ctl("list_connections", "ssl", "-q").split()
    finally:
        close_quietly(connection)


def test_the_gateways_broker_client_publishes_over_tls_with_the_ca_file(tls_broker: RabbitNode, tls_dir: Path) -> None:
    settings = Settings(amqp_url=tls_broker.amqps_url, broker_namespace=f"tls-{uuid.uuid4().hex[:8]}.")
    client = BrokerClient(
        settings.amqp_url, Topology.from_settings(settings), publish_timeout_s=10, ca_file=tls_dir / "ca.pem"
    )
    client.start()
    try:
        assert client.connected.wait(30), "the gateway's client never connected over TLS"
        client.publish_event("tls.checked", {})  # waits for the broker's confirm
        assert client.training_requests_waiting() == 0
    finally:
        client.stop()


def test_a_broker_whose_certificate_another_ca_signed_is_refused(tls_broker: RabbitNode, other_ca: Path) -> None:
    with pytest.raises(BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        connect(tls_broker.amqps_url, timeout_s=1, ca_file=other_ca)


def test_a_broker_certificate_is_refused_without_the_ca_file_when_the_system_does_not_trust_it(
    tls_broker: RabbitNode,
) -> None:
    with pytest.raises(BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        connect(tls_broker.amqps_url, timeout_s=1)


def test_amqps_checks_the_host_name_and_plain_amqp_uses_no_tls(tmp_path: Path) -> None:
    parameters = connection_parameters("amqps://u:p@broker.example.org:5671/%2F", ca_file=None)
    assert parameters.ssl_options.server_hostname == "broker.example.org"
    assert parameters.ssl_options.context.check_hostname
    assert connection_parameters("amqp://u:p@broker:5672/%2F", ca_file=tmp_path / "unused.pem").ssl_options is None


def test_an_unreadable_amqp_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="AMQP_CA_FILE"):
        connection_parameters("amqps://u:p@broker:5671/%2F", ca_file=tmp_path / "missing.pem")


# --- S3 -------------------------------------------------------------------------------------------


def tls_store_settings(server: SeaweedS3, ca_file: Path | None) -> Settings:
    return Settings(
        s3_endpoint=server.https_endpoint,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
        s3_secure=True,
        s3_ca_file=ca_file,
        s3_bucket_prefix=f"tls{uuid.uuid4().hex[:8]}-",
    )


def test_the_store_works_over_https_with_an_endpoint_the_ca_file_vouches_for(tls_s3, tls_dir):
    store = create_store(tls_store_settings(tls_s3, tls_dir / "ca.pem"))
    store.put("results/predictions/tls.json", b'{"over": "https"}', "application/json")
    assert store.get("results/predictions/tls.json") == b'{"over": "https"}'


def test_an_s3_endpoint_whose_certificate_another_ca_signed_is_refused(tls_s3, other_ca):
    store = create_store(tls_store_settings(tls_s3, other_ca))
    with pytest.raises(StorageUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        store.put("results/predictions/refused.json", b"{}", "application/json")


def test_an_unreadable_s3_ca_file_is_a_configuration_error(tls_s3, tmp_path):
    with pytest.raises(ConfigurationError, match="S3_CA_FILE"):
        create_store(tls_store_settings(tls_s3, tmp_path / "missing.pem"))


def test_the_ca_files_are_read_from_the_environment_as_paths() -> None:
    settings = Settings.from_env({"AMQP_CA_FILE": "/etc/slc/broker-ca.pem", "S3_CA_FILE": ""})
    assert settings.amqp_ca_file == Path("/etc/slc/broker-ca.pem")
    assert settings.s3_ca_file is None
