"""The proxy stage of `make compose-test`: slow and greedy clients against the stack's nginx.

Every check goes through the `proxy` service (deploy/nginx/nginx.conf) over HTTPS, verified
against the certificate authority deploy/compose/new-cert.sh made for the run:

- plain HTTP answers 308 with the same path on HTTPS;
- SLOW_HEADER_CLIENTS connections trickling their headers and SLOW_BODY_CLIENTS trickling a
  body, kept up for ATTACK_S (a connection the proxy closes is opened again), while an honest
  client asks for /healthz and a prediction every HONEST_INTERVAL_S: each must be answered,
  200, within HONEST_LIMIT_S. The slow clients run inside a container of the stack (its own
  address), the honest client on this host (another address), as an attacker and a user would
  be; the per-address limits see them apart;
- a flood of requests from one address gets 429 with Retry-After and the gateway's JSON error;
- a body over the gateway's limit gets 413 before it is sent, and the gateway never sees it;
- uploads built to cost the gateway memory or CPU, through the proxy: eight 40 MP black PNGs
  in one request (413, refused from their headers), a 300 MiB file part (413 at the part's
  limit) and a JPEG padded with 9 MiB of fill bytes (422), with the gateway container's
  resident memory growing at most BOMB_RSS_LIMIT and PART_RSS_LIMIT.

Standard library only, like compose_test.py, which calls `check_proxy`.
"""

from __future__ import annotations

import http.client
import json
import ssl
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SLOW_HEADER_CLIENTS = 128
SLOW_BODY_CLIENTS = 128
ATTACK_S = 30
HONEST_INTERVAL_S = 1.0
HONEST_LIMIT_S = 3.0
FLOOD_THREADS = 16
FLOOD_MAX_S = 8.0
FLOOD_MAX_REQUESTS = 6000
# The gateway's request limit (services/gateway/app.py MAX_CONTENT_LENGTH with the default
# settings): MAX_FILES_PER_REQUEST x MAX_UPLOAD_BYTES + 64 KiB; nginx.conf's client_max_body_size.
GATEWAY_BODY_LIMIT = 32 * 10 * 1024 * 1024 + 64 * 1024
REQUEST_TIMEOUT_S = 30
MIB = 1024 * 1024
# The targets for the gateway's growth (issue 22).
BOMB_RSS_LIMIT = 256 * MIB
PART_RSS_LIMIT = 64 * MIB

# Run with `python -` inside a container of the stack (it has Python; the proxy is `proxy:8443`
# on the compose network). Arguments: host port header_clients body_clients hold_s. Prints JSON.
SLOW_CLIENTS_SCRIPT = r"""
import json, socket, ssl, sys, threading, time
from collections import Counter

host, port = sys.argv[1], int(sys.argv[2])
header_clients, body_clients, hold_s = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
TRICKLE_S = 1.0  # one byte a second: far slower than any real client
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the attacker does not care who answers
threading.stack_size(512 * 1024)
deadline = time.monotonic() + hold_s
lock = threading.Lock()
outcomes = {"header": Counter(), "body": Counter()}
longest = {"header": 0.0, "body": 0.0}

def trickle(tls, payload):
    # Send one byte a second until the deadline; what ended it: held, closed, or an answer's status.
    for index in range(len(payload)):
        if time.monotonic() >= deadline:
            return "held to the end"
        try:
            tls.sendall(payload[index:index + 1])
            data = tls.recv(4096)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except OSError:
            return "closed by the proxy"
        if not data:
            return "closed by the proxy"
        return "answered " + data.split(b" ", 2)[1].decode(errors="replace")
    return "payload exhausted"

def client(kind):
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
    if kind == "body":
        head = (b"POST /api/v1/predictions HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: multipart/form-data; boundary=slow\r\nContent-Length: 1000000\r\n\r\n")
    payload = (b"X-Slow: " if kind == "header" else b"--slow\r\n") + b"a" * 4000
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            raw = socket.create_connection((host, port), timeout=10)
            tls = context.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(head)
            tls.settimeout(TRICKLE_S)
            outcome = trickle(tls, payload)
            tls.close()
        except OSError as error:
            outcome = "error " + type(error).__name__
        with lock:
            outcomes[kind][outcome] += 1
            if outcome.startswith("closed"):
                longest[kind] = max(longest[kind], time.monotonic() - started)
        if outcome.startswith(("answered", "error")):
            time.sleep(1.0)  # refused: ask again a second later, like a persistent attacker

threads = [threading.Thread(target=client, args=("header",)) for _ in range(header_clients)]
threads += [threading.Thread(target=client, args=("body",)) for _ in range(body_clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"outcomes": {k: dict(v) for k, v in outcomes.items()},
                  "longest_closed_s": {k: round(v, 1) for k, v in longest.items()}}))
"""


class ProxyCheckFailed(Exception):
    """A check of the proxy did not hold."""


@dataclass
class ProxyEndpoint:
    """The proxy as this host reaches it, and what is needed to trust and use it."""

    https_port: int
    http_port: int
    context: ssl.SSLContext
    # Runs a shell-free command in a container of the stack with `stdin`; its stdout.
    exec_in_stack: Callable[[list[str], str, float], str]
    # The gateway's count of POST requests it answered (from its /metrics).
    gateway_posts: Callable[[], float]
    # A multipart prediction request: (body, content type).
    prediction_body: Callable[[int], tuple[bytes, str]]
    # Resident bytes of every process in the gateway's container, now.
    gateway_rss: Callable[[], int]

    def connection(self, timeout_s: float = REQUEST_TIMEOUT_S) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=timeout_s, context=self.context)


def check_redirect(proxy: ProxyEndpoint) -> str:
    """Plain HTTP answers a permanent redirect to the same path and query on HTTPS."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=REQUEST_TIMEOUT_S)
    try:
        connection.request("POST", "/api/v1/predictions?wait=false", body=b"", headers={"Content-Length": "0"})
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()
    location = answer.getheader("Location", "")
    expected = f"https://127.0.0.1:{proxy.https_port}/api/v1/predictions?wait=false"
    if answer.status not in (301, 308) or location != expected:
        raise ProxyCheckFailed(f"HTTP answered {answer.status} to {location!r}, not a redirect to {expected}")
    return f"{answer.status} {location}"


@dataclass
class HonestRecord:
    """What the honest client saw: (what, status, seconds) of every request."""

    answers: list[tuple[str, int, float]] = field(default_factory=list)

    def slow_or_failed(self) -> list[tuple[str, int, float]]:
        return [answer for answer in self.answers if answer[1] != 200 or answer[2] > HONEST_LIMIT_S]


def honest_client(proxy: ProxyEndpoint, stop: threading.Event, record: HonestRecord) -> None:
    """A /healthz and a prediction every HONEST_INTERVAL_S, each on a new connection, until `stop`."""
    sent = 0
    while not stop.is_set():
        started = time.monotonic()
        sent += 1
        body, content_type = proxy.prediction_body(sent)
        for what, method, path, payload, headers in (
            ("healthz", "GET", "/healthz", None, {}),
            ("prediction", "POST", "/api/v1/predictions", body, {"Content-Type": content_type}),
        ):
            began = time.monotonic()
            connection = proxy.connection(timeout_s=HONEST_LIMIT_S * 3)
            try:
                connection.request(method, path, body=payload, headers=headers)
                answer = connection.getresponse()
                answer.read()
                status = answer.status
            except OSError:
                status = 0
            finally:
                connection.close()
            record.answers.append((what, status, time.monotonic() - began))
        stop.wait(max(HONEST_INTERVAL_S - (time.monotonic() - started), 0.05))


def check_slow_clients(proxy: ProxyEndpoint) -> dict[str, Any]:
    """Slow clients from inside the stack for ATTACK_S while an honest client is timed from here."""
    record, stop = HonestRecord(), threading.Event()
    honest = threading.Thread(target=honest_client, args=(proxy, stop, record), daemon=True)
    arguments = ["proxy", "8443", str(SLOW_HEADER_CLIENTS), str(SLOW_BODY_CLIENTS), str(ATTACK_S)]
    result: dict[str, Any] = {}

    def attack() -> None:
        try:
            output = proxy.exec_in_stack(["python", "-", *arguments], SLOW_CLIENTS_SCRIPT, ATTACK_S + 60)
            result.update(json.loads(output))
        except Exception as error:  # reported below: the attack must have run for the check to mean anything
            result["error"] = f"{type(error).__name__}: {error}"[:500]

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    time.sleep(2)  # let the slow connections open first
    honest.start()
    attacker.join(ATTACK_S + 90)
    stop.set()
    honest.join(REQUEST_TIMEOUT_S)
    if "error" in result or "outcomes" not in result:
        raise ProxyCheckFailed(f"the slow clients did not run: {result.get('error', result)}")
    slow = record.slow_or_failed()
    by_what = Counter(what for what, _, _ in record.answers)
    report = {
        "slow_header_clients": SLOW_HEADER_CLIENTS,
        "slow_body_clients": SLOW_BODY_CLIENTS,
        "attack_s": ATTACK_S,
        "slow_outcomes": result["outcomes"],
        "slow_longest_closed_s": result["longest_closed_s"],
        "honest_requests": dict(by_what),
        "honest_max_s": round(max((seconds for _, _, seconds in record.answers), default=0.0), 2),
        "honest_slow_or_failed": len(slow),
    }
    if not by_what["healthz"] or not by_what["prediction"]:
        raise ProxyCheckFailed(f"the honest client sent nothing during the attack: {report}")
    if slow:
        raise ProxyCheckFailed(f"honest requests slower than {HONEST_LIMIT_S} s or failed under attack: {slow[:10]}")
    outcomes = [(outcome, n) for kind in result["outcomes"].values() for outcome, n in kind.items()]
    opened = sum(n for outcome, n in outcomes if not outcome.startswith("error"))
    if opened < SLOW_HEADER_CLIENTS + SLOW_BODY_CLIENTS:
        raise ProxyCheckFailed(f"fewer slow connections were opened than there are slow clients: {result}")
    return report


@dataclass
class FloodRecord:
    statuses: Counter[int] = field(default_factory=Counter)
    refusal: tuple[str | None, bytes] | None = None  # Retry-After and body of a 429
    lock: threading.Lock = field(default_factory=threading.Lock)


def _flood_one(proxy: ProxyEndpoint, deadline: float, record: FloodRecord) -> None:
    connection = proxy.connection(timeout_s=10)
    try:
        while time.monotonic() < deadline:
            with record.lock:
                if sum(record.statuses.values()) >= FLOOD_MAX_REQUESTS:
                    return
            try:
                connection.request("GET", "/healthz")
                answer = connection.getresponse()
                body = answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = proxy.connection(timeout_s=10)
                status, body, answer = 0, b"", None
            with record.lock:
                record.statuses[status] += 1
                if status == 429 and record.refusal is None and answer is not None:
                    record.refusal = (answer.getheader("Retry-After"), body)
    finally:
        connection.close()


def check_flood(proxy: ProxyEndpoint) -> dict[str, Any]:
    """FLOOD_THREADS keep-alive connections sending /healthz back to back from one address."""
    record = FloodRecord()
    started = time.monotonic()
    deadline = started + FLOOD_MAX_S
    threads = [
        threading.Thread(target=_flood_one, args=(proxy, deadline, record), daemon=True) for _ in range(FLOOD_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(FLOOD_MAX_S + REQUEST_TIMEOUT_S)
    elapsed = time.monotonic() - started
    total = sum(record.statuses.values())
    report = {
        "flood_requests": total,
        "flood_per_s": round(total / elapsed),
        "flood_statuses": {str(status): count for status, count in sorted(record.statuses.items())},
    }
    if record.refusal is None:
        raise ProxyCheckFailed(f"a flood from one address was never refused with 429: {report}")
    retry_after, body = record.refusal
    code = _error_code(body)
    if not retry_after or code != "rate_limited":
        raise ProxyCheckFailed(f"429 without Retry-After or the JSON error: Retry-After={retry_after!r} {body[:200]!r}")
    report["flood_retry_after"] = retry_after
    return report


def _error_code(body: bytes) -> str | None:
    """The `code` of an answer in the gateway's error shape, or None for any other body."""
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def check_body_limit(proxy: ProxyEndpoint) -> dict[str, Any]:
    """A request announcing one byte more than the gateway's limit: 413 at once; the gateway never sees it."""
    before = proxy.gateway_posts()
    connection = proxy.connection()
    try:
        connection.putrequest("POST", "/api/v1/predictions")
        connection.putheader("Content-Type", "multipart/form-data; boundary=big")
        connection.putheader("Content-Length", str(GATEWAY_BODY_LIMIT + 1))
        connection.endheaders()  # no body: the proxy must answer on the headers alone
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    code = _error_code(body)
    if answer.status != 413 or not code:
        raise ProxyCheckFailed(f"a body over the limit answered {answer.status} {body[:200]!r}, not a JSON 413")
    after = proxy.gateway_posts()
    if after != before:
        raise ProxyCheckFailed(f"the gateway answered {after - before:.0f} POST requests during the 413 check")
    return {"over_limit_status": answer.status, "over_limit_bytes": GATEWAY_BODY_LIMIT + 1}


def rgb_png(width: int, height: int, compressed_rows: bytes) -> bytes:
    """A PNG file of 8-bit RGB pixels from its zlib-compressed rows (each a filter byte, then pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", compressed_rows) + chunk(b"IEND", b"")


def black_png(side: int) -> bytes:
    """A side x side RGB PNG of black pixels, compressed row by row: about 120 KB for 40 MP."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)  # filter byte, then the pixels
    return rgb_png(side, side, b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush())


def _upload(proxy: ProxyEndpoint, files: list[tuple[str, bytes]]) -> tuple[int, str | None, float]:
    """POST the files as one prediction request (?wait=false); (status, error code, gateway RSS growth)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    before = proxy.gateway_rss()
    connection = proxy.connection(timeout_s=120)
    try:
        connection.request(
            "POST",
            "/api/v1/predictions?wait=false",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        answer = connection.getresponse()
        payload = answer.read()
    finally:
        connection.close()
    code = _error_code(payload)
    return answer.status, code, proxy.gateway_rss() - before


def check_hostile_uploads(proxy: ProxyEndpoint) -> dict[str, Any]:
    """Bomb PNGs, a 300 MiB part and fill bytes through the proxy: each refused, the gateway barely grows."""
    bomb = black_png(6324)
    outcomes = {
        "bombs": _upload(proxy, [(f"bomb-{index}.png", bomb) for index in range(8)]),
        "part_300_mib": _upload(proxy, [("big.bin", bytes(300 * MIB))]),
        "fill_bytes": _upload(proxy, [("padded.jpg", b"\xff\xd8" + b"\xff" * (9 * MIB) + b"\xd9")]),
    }
    expected = {
        "bombs": (413, "image_too_large"),
        "part_300_mib": (413, "payload_too_large"),
        "fill_bytes": (422, "invalid_image"),
    }
    for name, (status, code, _) in outcomes.items():
        if (status, code) != expected[name]:
            raise ProxyCheckFailed(f"{name}: answered {status} {code!r}, not {expected[name]}")
    limits = {"bombs": BOMB_RSS_LIMIT, "part_300_mib": PART_RSS_LIMIT}
    for name, limit in limits.items():
        if outcomes[name][2] > limit:
            raise ProxyCheckFailed(f"{name}: the gateway grew by {outcomes[name][2] / MIB:.0f} MiB")
    return {f"{name}_rss_growth_mb": round(outcome[2] / MIB, 1) for name, outcome in outcomes.items()}


def check_proxy(proxy: ProxyEndpoint) -> dict[str, Any]:
    """Every proxy check; the numbers for the report (keys prefixed `proxy_` by the caller)."""
    report: dict[str, Any] = {"redirect": check_redirect(proxy)}
    report.update(check_body_limit(proxy))
    report.update(check_hostile_uploads(proxy))
    report.update(check_slow_clients(proxy))
    report.update(check_flood(proxy))
    # The flood's address may ask again once its bucket drains (burst 400 at 200 a second).
    time.sleep(3)
    return report


def run_in_container(container_id: str) -> Callable[[list[str], str, float], str]:
    """`exec_in_stack` for one container: `docker exec -i` with the text on stdin."""

    def run(command: list[str], stdin: str, timeout_s: float) -> str:
        result = subprocess.run(
            ["docker", "exec", "-i", container_id, *command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            detail = result.stderr[-1000:]
            raise ProxyCheckFailed(f"docker exec {' '.join(command)} exited {result.returncode}: {detail}")
        return result.stdout

    return run
