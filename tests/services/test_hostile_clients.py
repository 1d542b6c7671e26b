"""Clients that try to take the gateway down: decompression bombs, huge parts, fill bytes, slow
connections, floods of jobs (issue 22). A real gateway process on real sockets, RabbitMQ and S3.

Memory is read from /proc (the gateway's processes together); each bound is the issue's target.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from shared.settings import Settings
from shared.storage import create_store
from tests.support.images import solid_jpeg
from tests.support.system import RunningSystem, ServiceProcess, system_env

MIB = 1024 * 1024
# What a client waits for an answer; the honest client below must get each within it.
HONEST_TIMEOUT_S = 3.0


@pytest.fixture
def make_system(
    s3_settings: Settings, models_dir: Path, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningSystem]]:
    """Systems with the given settings (as keyword arguments) on the test's broker namespace and store."""
    log_dir = output_dir / "logs" / request.node.name
    log_dir.mkdir(parents=True, exist_ok=True)
    systems: list[RunningSystem] = []

    def make(**settings: object) -> RunningSystem:
        systems.append(RunningSystem(system_env(s3_settings, models_dir, **settings), log_dir))
        return systems[-1]

    try:
        yield make
    finally:
        for running in systems:
            running.stop()


@pytest.fixture
def system(make_system: Callable[..., RunningSystem]) -> RunningSystem:
    return make_system()


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """6324x6324 black pixels, just under the 40 MP limit: about 120 KB that decode to 160 MB."""
    buffer = io.BytesIO()
    Image.new("RGB", (6324, 6324)).save(buffer, "PNG")
    return buffer.getvalue()


def resident_bytes(gateway: ServiceProcess) -> int:
    """Resident memory of the gateway's master and its worker processes together."""
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for process in [str(pid), *children]:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def stored_uploads(s3_settings: Settings) -> list[str]:
    return list(create_store(s3_settings).list("uploads/predictions/"))


def post_files(url: str, files: list[tuple[str, bytes]], *, timeout_s: float = 60) -> requests.Response:
    form = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return requests.post(f"{url}/api/v1/predictions?wait=false", files=form, timeout=timeout_s)


def test_eight_bomb_pngs_are_refused_from_their_headers(
    system: RunningSystem, s3_settings: Settings, bomb_png: bytes
) -> None:
    gateway = system.start_gateway()
    before = resident_bytes(gateway)
    response = post_files(system.gateway_url, [(f"bomb-{index}.png", bomb_png) for index in range(8)])
    grown = resident_bytes(gateway) - before
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "image_too_large" and "8 images" in error["message"]
    assert grown <= 256 * MIB, f"the gateway grew by {grown / MIB:.0f} MiB"
    assert stored_uploads(s3_settings) == []


def test_one_bomb_png_is_decoded_within_the_budget_and_accepted(
    system: RunningSystem, s3_settings: Settings, bomb_png: bytes
) -> None:
    """One 40 MP image is a real (if odd) upload: decoded alone, its model input kept, the rest dropped."""
    gateway = system.start_gateway()
    before = resident_bytes(gateway)
    response = post_files(system.gateway_url, [("bomb.png", bomb_png)])
    grown = resident_bytes(gateway) - before
    assert response.status_code == 202, response.text
    assert grown <= 256 * MIB, f"the gateway grew by {grown / MIB:.0f} MiB"
    keys = stored_uploads(s3_settings)
    assert sorted(key.rsplit(".", 1)[-1] for key in keys) == ["npy", "png"]  # the upload and its model input


def send_body(url: str, head: dict[str, str], body_size: int, *, piece: bytes = b"\0" * MIB) -> tuple[int, dict]:
    """POST `body_size` bytes (zeros after `head`'s form prelude) with a Content-Length; (status, JSON)."""
    prelude = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/api/v1/predictions?wait=false")
    for name, value in {**head, "Content-Length": str(len(prelude) + body_size)}.items():
        connection.putheader(name, value)
    connection.endheaders()
    try:
        connection.send(prelude)
        for _ in range(body_size // len(piece)):
            connection.send(piece)
        connection.send(b"\0" * (body_size % len(piece)))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the gateway answered before the body ended; its answer is still readable
    response = connection.getresponse()
    status, body = response.status, response.read()
    connection.close()
    return status, json.loads(body)


def test_a_300_mib_part_is_refused_at_its_limit_without_holding_it(
    system: RunningSystem, s3_settings: Settings
) -> None:
    gateway = system.start_gateway()
    before = resident_bytes(gateway)
    status, body = send_body(system.gateway_url, {"Content-Type": "multipart/form-data; boundary=b"}, 300 * MIB)
    grown = resident_bytes(gateway) - before
    assert status == 413 and body["error"]["code"] == "payload_too_large", body
    assert grown <= 64 * MIB, f"the gateway grew by {grown / MIB:.0f} MiB"
    assert stored_uploads(s3_settings) == []


def test_a_body_over_the_request_limit_is_refused_before_it_is_read(system: RunningSystem) -> None:
    system.start_gateway()
    host, port = system.gateway_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n")
        answer = client.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"request_entity_too_large" in answer


def test_a_jpeg_padded_with_fill_bytes_is_refused_before_decoding(system: RunningSystem, s3_settings: Settings) -> None:
    system.start_gateway()
    image = solid_jpeg(120, (224, 224))
    padded = image[:2] + b"\xff" * (9 * MIB) + image[2:]
    response = post_files(system.gateway_url, [("padded.jpg", padded)])
    assert response.status_code == 422, response.text
    assert "fill bytes" in response.json()["error"]["message"]
    assert stored_uploads(s3_settings) == []


class SlowClients:
    """Connections that send a request a few bytes a second, reconnecting whenever they are cut off."""

    def __init__(self, address: tuple[str, int], count: int, hold_s: float) -> None:
        self.address = address
        self.until = time.monotonic() + hold_s
        self.cut_off = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._trickle, args=(index % 2 == 0,), daemon=True) for index in range(count)
        ]

    def __enter__(self) -> SlowClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        for thread in self._threads:
            thread.join(timeout=10)

    def _trickle(self, headers_only: bool) -> None:
        while time.monotonic() < self.until:
            try:
                with socket.create_connection(self.address, timeout=5) as client:
                    if headers_only:
                        client.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\n")
                    else:
                        client.sendall(
                            b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
                        )
                    while time.monotonic() < self.until:
                        client.sendall(b"X-Slow: 1\r\n" if headers_only else b"x")
                        time.sleep(1)
            except OSError:
                with self._lock:
                    self.cut_off += 1


def test_slow_clients_hold_no_thread_and_an_honest_client_is_answered_throughout(system: RunningSystem) -> None:
    """128 connections trickling headers or a body for 30 s: /healthz and predictions answered every time."""
    system.start_gateway()
    host, port = system.gateway_url.removeprefix("http://").split(":")
    image = solid_jpeg(200)
    answered, late = 0, []
    with SlowClients((host, int(port)), count=128, hold_s=30) as attack:
        time.sleep(2)  # every slow connection open and trickling
        while time.monotonic() < attack.until - 1:
            for request in (
                lambda: requests.get(f"{system.gateway_url}/healthz", timeout=HONEST_TIMEOUT_S),
                lambda: post_files(system.gateway_url, [("honest.jpg", image)], timeout_s=HONEST_TIMEOUT_S),
            ):
                try:
                    response = request()
                    assert response.status_code in {200, 202}, response.text
                    answered += 1
                except requests.RequestException as error:
                    late.append(repr(error))
            time.sleep(0.5)
    assert late == [], f"{len(late)} honest requests were not answered in {HONEST_TIMEOUT_S} s: {late[:3]}"
    assert answered > 40
    # Headers that never end are cut off at CLIENT_READ_TIMEOUT_S (10 s), and the clients come back.
    assert attack.cut_off >= 64


def raw_exchange(url: str, request: bytes, *, expect_continue: bool = False) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        if expect_continue:
            head, _, body = request.partition(b"\r\n\r\n")
            client.sendall(head + b"\r\n\r\n")
            assert client.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
            client.sendall(body)
        else:
            client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    return received


def test_requests_are_framed_by_the_gateway_before_a_thread_sees_them(system: RunningSystem) -> None:
    system.start_gateway()
    url = system.gateway_url
    pipelined = raw_exchange(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert pipelined.count(b"HTTP/1.1 200") == 2
    chunked = raw_exchange(
        url, b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert chunked.startswith(b"HTTP/1.1 411") and b"length_required" in chunked
    huge_head = raw_exchange(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert huge_head.startswith(b"HTTP/1.1 431")
    part_head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    form = part_head + solid_jpeg(90) + b"\r\n--b--\r\n"
    head = (
        b"POST /api/v1/predictions?wait=false HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n" % len(form)
    )
    continued = raw_exchange(url, head + form, expect_continue=True)
    assert continued.startswith(b"HTTP/1.1 202"), continued[:200]
    assert continued.count(b"100 Continue") == 0  # sent once, before the body, by the gateway's loop


def test_a_client_may_have_only_so_many_jobs_queued(
    make_system: Callable[..., RunningSystem], s3_settings: Settings
) -> None:
    """MAX_QUEUED_JOBS_PER_CLIENT=3 and no worker: the fourth gets a 429; answers free the quota."""
    system = make_system(max_queued_jobs_per_client=3)
    system.start_gateway()
    image = solid_jpeg(200)
    accepted = [post_files(system.gateway_url, [(f"{index}.jpg", image)]) for index in range(3)]
    assert [response.status_code for response in accepted] == [202, 202, 202]
    refused = post_files(system.gateway_url, [("one-more.jpg", image)])
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    assert int(refused.headers["Retry-After"]) > 0
    assert len(stored_uploads(s3_settings)) == 3  # nothing of the refused request was stored
    system.start_worker()
    deadline = time.monotonic() + 60
    while (response := post_files(system.gateway_url, [("later.jpg", image)])).status_code == 429:
        assert time.monotonic() < deadline, "the quota was never freed by the answers"
        time.sleep(0.5)
    assert response.status_code == 202, response.text
