"""A clinic's own images, measured: upload a labelled collection through the API as a clinic,
run one retraining job with the defaults, and print every collection before and after.

Against a running system (`make run`, with DATA_DIR and EXTERNAL_DATA_DIR set as wanted):
the images go up one patient and label per request (`POST /datasets/uploads` with
`collection` and `patient`), so the system holds out whole patients; then one default job
runs (`POST /training-jobs`). "Before" and "after" are the production model's and the
candidate's figures on the same held-out parts, as the gate measured them.

    PYTHONPATH=. .venv/bin/python -m bench.clinic_retraining --data ../shared/datasets/isic2020 \\
        --collection isic2020 --out var/clinic-retraining.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import requests

# Files per request: one patient's images rarely exceed this.
CHUNK = 50


def upload(url: str, root: Path, collection: str, headers: dict[str, str]) -> dict[str, int]:
    """Every image of `root` ({benign,malignant}/ with a manifest.csv naming patients) into `collection`."""
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    with (root / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            groups[(row.get("patient") or "", row["label"])].append(root / row["path"])
    totals = {"added": 0, "held_out": 0, "duplicates": 0, "rejected": 0}
    for (patient, label), paths in sorted(groups.items()):
        for start in range(0, len(paths), CHUNK):
            files = [("file", (path.name, path.read_bytes(), "image/jpeg")) for path in paths[start : start + CHUNK]]
            fields = {"label": label, "collection": collection, **({"patient": patient} if patient else {})}
            response = requests.post(
                f"{url}/api/v1/datasets/uploads", data=fields, files=files, headers=headers, timeout=120
            )
            response.raise_for_status()
            for key in totals:
                totals[key] += response.json()[key]
    return totals


def retrain(url: str, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    response = requests.post(f"{url}/api/v1/training-jobs", json={}, headers=headers, timeout=30)
    response.raise_for_status()
    job_id = response.json()["id"]
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/api/v1/training-jobs/{job_id}", timeout=30).json()
        progress = job.get("progress") or {}
        shown = (progress.get("stage"), progress.get("epoch"), progress.get("eta_seconds"))
        if shown != last:
            print(f"  {time.strftime('%H:%M:%S')} {job['status']}: {shown}", flush=True)
            last = shown
        if job["status"] in {"promoted", "rejected", "failed"}:
            return job
        time.sleep(5)
    raise SystemExit(f"job {job_id} did not finish within {timeout_s:.0f} s")


def _change(before: dict[str, Any], after: dict[str, Any], key: str) -> str:
    old = f"{before[key]:.3f}" if key in before else "-"
    return f"{old} -> {after[key]:.3f}"


def table(gate: dict[str, Any]) -> str:
    lines = [
        "| collection | judged | AUC before -> after | sensitivity before -> after | specificity before -> after |",
        "|---|---|---|---|---|",
    ]
    for name, entry in sorted(gate["collections"].items()):
        before, after = entry["production"] or {}, entry["candidate"]
        auc, sensitivity, specificity = (_change(before, after, key) for key in ("auc", "sensitivity", "specificity"))
        judged = "yes" if entry["judged"] else "no"
        label = f"{name} (external)" if entry.get("external") else name
        lines.append(f"| {label} | {judged} | {auc} | {sensitivity} | {specificity} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--data", type=Path, required=True, help="{benign,malignant}/ with manifest.csv (patient)")
    parser.add_argument("--collection", required=True, help="the clinic's collection name")
    parser.add_argument("--token", default="", help="the WRITE_TOKEN, when one is set")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the job")
    parser.add_argument("--out", type=Path, help="also write the job and the upload counts here as JSON")
    parser.add_argument("--steps", choices=("upload", "train", "both"), default="both", help="what to do")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}

    counts, uploaded_s = {}, 0.0
    if args.steps in ("upload", "both"):
        started = time.monotonic()
        counts = upload(args.url, args.data, args.collection, headers)
        uploaded_s = time.monotonic() - started
        print(f"uploaded in {uploaded_s:.0f} s: {counts}", flush=True)
    if args.steps == "upload":
        return
    job = retrain(args.url, headers, args.timeout)
    seconds = job.get("timings", {}).get("finished_at", 0) - job.get("timings", {}).get("started_at", 0)
    print(f"job {job['id']}: {job['status']} in {seconds / 60:.1f} min (queued to finished)")
    if job.get("gate"):
        print(table(job["gate"]))
        print("\n".join(job["gate"]["reasons"]))
    if args.out:
        args.out.write_text(json.dumps({"upload": counts, "upload_seconds": uploaded_s, "job": job}, indent=2))


if __name__ == "__main__":
    main()
