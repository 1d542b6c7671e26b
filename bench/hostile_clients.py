"""What hostile clients cost the gateway (issue 22), each beside its baseline in the same run.

Starts the system as bench/end_to_end.py does (gateway and one worker as processes), then:

- an honest client's latency (`/healthz`, then a synchronous prediction) idle, and again while
  128 connections trickle headers or a body for `--hold` seconds;
- one request of eight 40 MP black PNGs (114 KB each): status, seconds, gateway RSS growth;
- one 300 MiB file part: the same;
- a 224 px JPEG padded with 9 MiB of 0xFF fill bytes: status and seconds, against the same
  JPEG unpadded.

    PYTHONPATH=. .venv/bin/python -m bench.hostile_clients [--hold 30]

The last line is JSON. Nothing here asserts: tests/services/test_hostile_clients.py does.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from PIL import Image

from bench.end_to_end import BENCH_LOGS, models_dir
from bench.system import System, gateway_rss_mb, running_system
from shared.settings import Settings

MIB = 1024 * 1024
HONEST_TIMEOUT_S = 10.0


def jpeg(size: int = 224) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (150, 90, 70)).save(buffer, "JPEG")
    return buffer.getvalue()


def post(url: str, files: list[tuple[str, bytes]], *, wait: bool = True) -> tuple[int, float]:
    started = time.perf_counter()
    form = [("file", (name, data, "application/octet-stream")) for name, data in files]
    response = requests.post(f"{url}/api/v1/predictions?wait={str(wait).lower()}", files=form, timeout=120)
    return response.status_code, time.perf_counter() - started


def honest_latencies(url: str, until: float) -> dict[str, float]:
    """Seconds per honest round (healthz + a synchronous prediction) until `until`; failures counted."""
    image, latencies, failures = jpeg(), [], 0
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            healthy = requests.get(f"{url}/healthz", timeout=HONEST_TIMEOUT_S).status_code == 200
            predicted = post(url, [("honest.jpg", image)])[0] == 200
            failures += not (healthy and predicted)
        except requests.RequestException:
            failures += 1
        latencies.append(time.perf_counter() - started)
        time.sleep(0.25)
    return {
        "rounds": len(latencies),
        "failures": failures,
        "median_s": round(statistics.median(latencies), 3),
        "max_s": round(max(latencies), 3),
    }


def trickle(address: tuple[str, int], until: float, headers_only: bool) -> None:
    """One slow client: a request a few bytes a second, reconnecting whenever it is cut off."""
    while time.monotonic() < until:
        try:
            with socket.create_connection(address, timeout=5) as client:
                client.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\n")
                if not headers_only:
                    client.sendall(b"Content-Length: 100000\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n")
                while time.monotonic() < until:
                    client.sendall(b"X-Slow: 1\r\n" if headers_only else b"x")
                    time.sleep(1)
        except OSError:
            time.sleep(0.1)


def under_slow_clients(url: str, connections: int, hold_s: float) -> dict[str, float]:
    host, port = url.removeprefix("http://").split(":")
    until = time.monotonic() + hold_s
    threads = [
        threading.Thread(target=trickle, args=((host, int(port)), until, index % 2 == 0), daemon=True)
        for index in range(connections)
    ]
    for thread in threads:
        thread.start()
    time.sleep(2)
    measured = honest_latencies(url, until - 1)
    for thread in threads:
        thread.join(timeout=10)
    return measured


def big_part(url: str, size: int) -> tuple[int, float]:
    """POST one file part of `size` zero bytes with a Content-Length, as a raw client would."""
    prelude = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    connection.putrequest("POST", "/api/v1/predictions?wait=false")
    connection.putheader("Content-Type", "multipart/form-data; boundary=b")
    connection.putheader("Content-Length", str(len(prelude) + size))
    connection.endheaders()
    try:
        connection.send(prelude)
        for _ in range(size // MIB):
            connection.send(b"\0" * MIB)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status = connection.getresponse().status
    connection.close()
    return status, time.perf_counter() - started


def measured_attack(system: System, attack: Callable[[], tuple[int, float]]) -> dict[str, object]:
    before = gateway_rss_mb(system)
    status, seconds = attack()
    return {"status": status, "seconds": round(seconds, 3), "rss_growth_mb": round(gateway_rss_mb(system) - before, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the slow connections are held")
    parser.add_argument("--connections", type=int, default=128)
    args = parser.parse_args(argv)
    models = models_dir(args.models, Settings.from_env().serving_runtime)
    bomb = io.BytesIO()
    Image.new("RGB", (6324, 6324)).save(bomb, "PNG")
    small = jpeg()
    padded = small[:2] + b"\xff" * (9 * MIB) + small[2:]
    report: dict[str, dict] = {}
    log_dir = BENCH_LOGS / time.strftime("hostile-%Y%m%dT%H%M%S")
    log_dir.mkdir(parents=True)
    with (
        tempfile.TemporaryDirectory() as store_dir,
        running_system(models, workers=1, batch_size=4, store_dir=Path(store_dir), log_dir=log_dir) as system,
    ):
        url = system.url
        post(url, [("warm.jpg", small)])
        report["honest_idle"] = honest_latencies(url, time.monotonic() + 10)
        report["honest_under_slow_clients"] = under_slow_clients(url, args.connections, args.hold)
        report["eight_bomb_pngs"] = measured_attack(system, lambda: post(url, [("b.png", bomb.getvalue())] * 8))
        report["part_300_mib"] = measured_attack(system, lambda: big_part(url, 300 * MIB))
        report["fill_byte_jpeg"] = measured_attack(system, lambda: post(url, [("p.jpg", padded)], wait=False))
        report["plain_jpeg"] = measured_attack(system, lambda: post(url, [("s.jpg", small)], wait=False))
    for name, numbers in report.items():
        print(f"{name}: {numbers}", flush=True)
    ratio = report["honest_under_slow_clients"]["median_s"] / report["honest_idle"]["median_s"]
    print(f"honest median under slow clients / idle: {ratio:.2f}x")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
