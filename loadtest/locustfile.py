"""Locust load test of the gateway: synchronous predictions, some polled ones, readiness probes.

    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 30s --host http://127.0.0.1:8000

Images come from `LOADTEST_IMAGES` (a folder searched for JPEGs and PNGs; default the shared
HAM10000 test split, ../shared/datasets/ham10000/test beside the checkout), or are drawn at
random when that folder has none. Users send requests back to back (no think time), like the
closed-loop clients of bench/end_to_end.py.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import random
import time
from pathlib import Path

import gevent
from locust import HttpUser, constant, task
from PIL import Image

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ham10000" / "test"
MAX_IMAGES = 200  # enough variety; keeps start-up and memory small
POLL_INTERVAL_S = 0.1
POLL_TIMEOUT_S = 15.0


@functools.cache
def images() -> list[tuple[str, bytes]]:
    """(file name, bytes) of the images to send, read once per locust process."""
    folder = Path(os.environ.get("LOADTEST_IMAGES", DEFAULT_IMAGES))
    paths = (
        sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}) if folder.is_dir() else []
    )
    if not paths:
        return [(f"synthetic-{index}.jpg", _synthetic_jpeg(index)) for index in range(16)]
    # An even spread over the folder, so both classes are sent (they sit in sub-folders).
    step = max(len(paths) // MAX_IMAGES, 1)
    return [(path.name, path.read_bytes()) for path in paths[::step][:MAX_IMAGES]]


def _synthetic_jpeg(seed: int) -> bytes:
    noise = random.Random(seed).randbytes(224 * 224 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (224, 224), noise).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class GatewayUser(HttpUser):
    """One client of the API; mostly synchronous predictions, like the web UI."""

    wait_time = constant(0)

    def on_start(self) -> None:
        # Each user starts at its own place in the image list, so users do not send in step.
        pool = images()
        self._images = itertools.islice(itertools.cycle(pool), random.randrange(len(pool)), None)

    def _upload(self) -> dict[str, tuple[str, bytes, str]]:
        name, data = next(self._images)
        content_type = "image/png" if name.lower().endswith(".png") else "image/jpeg"
        return {"file": (name, data, content_type)}

    @task(8)
    def predict_and_wait(self) -> None:
        with self.client.post(
            "/api/v1/predictions", files=self._upload(), name="POST /api/v1/predictions", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif "label" not in response.json():
                response.failure(f"no label in {response.text[:200]}")

    @task(1)
    def predict_then_poll(self) -> None:
        with self.client.post(
            "/api/v1/predictions?wait=false",
            files=self._upload(),
            name="POST /api/v1/predictions?wait=false",
            catch_response=True,
        ) as response:
            if response.status_code != 202:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            job_id = response.json()["id"]
        self._poll(job_id)

    def _poll(self, job_id: str) -> None:
        """Poll until the result is there; a result later than POLL_TIMEOUT_S is a failure."""
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while True:
            with self.client.get(
                f"/api/v1/predictions/{job_id}", name="GET /api/v1/predictions/[id]", catch_response=True
            ) as response:
                if response.status_code != 200:
                    response.failure(f"{response.status_code}: {response.text[:200]}")
                    return
                if response.json().get("status") != "pending":
                    return
                if time.monotonic() > deadline:
                    response.failure(f"still pending after {POLL_TIMEOUT_S:.0f}s")
                    return
            gevent.sleep(POLL_INTERVAL_S)

    @task(1)
    def readiness(self) -> None:
        self.client.get("/readyz", name="GET /readyz")
