"""Replays a bursty arrival pattern against the worker autoscaler's rules; prints a table.

The rules are those of deploy/k8s/base/worker.yaml: KEDA's RabbitMQ scaler reports the
`predict` queue's ready messages; the HPA it manages asks for ceil(ready / threshold) pods
every 15 s (its sync period), ignores changes within its 10% tolerance, scales up by at most
max(100%, 4 pods) per 15 s, scales down only to the highest recommendation of the last
`--scale-down-window` seconds and by at most 50% per 30 s. A new pod serves after
`--pod-start-s`. Each worker holds up to 8 prefetched jobs (2 x WORKER_MAX_BATCH), which
are unacked, so not counted as ready.

Service rate per worker (`--per-worker`, images/s) is the measured one of docs/scaling.md.
Time advances in steps of 0.1 s; jobs leave FIFO; a job's queue wait is the time from its
arrival to the step its worker takes it. Deterministic for a given `--seed`.

    python -m bench.autoscaling_sim --thresholds 10 40 150
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import deque
from dataclasses import dataclass, field

import numpy as np

STEP_S = 0.1
HPA_SYNC_S = 15.0
HPA_TOLERANCE = 0.1
PREFETCH_PER_WORKER = 8


# Half an hour of arrivals (jobs/s), linear between these (time s, rate) points: a 150/s
# baseline; a burst that ramps to 6x in 2 minutes, holds 3 minutes and falls; a STEP to 10x
# for 30 s (no warning: what no autoscaler can follow); a plateau at 3x; a lull at 30/s.
PROFILE = (
    (0, 150),
    (120, 150),
    (240, 900),
    (420, 900),
    (480, 150),
    (600, 150),
    (600.1, 1_500),
    (630, 1_500),
    (630.1, 150),
    (900, 150),
    (960, 450),
    (1_260, 450),
    (1_320, 150),
    (1_500, 30),
    (1_800, 30),
)
STEP_WINDOW_S = (600.0, 630.0)
DURATION_S = 1_800.0


def arrival_rate(t: float) -> float:
    times, rates = zip(*PROFILE, strict=True)
    return float(np.interp(t, times, rates))


@dataclass
class Autoscaler:
    """The HPA's decisions for KEDA's QueueLength metric, with the manifests' behavior."""

    threshold: float
    min_pods: int
    max_pods: int
    scale_down_window_s: float
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    last_down_at: float = -math.inf

    def decide(self, now: float, current: int, ready_messages: float) -> int:
        ratio = (ready_messages / self.threshold) / max(current, 1)
        wanted = current if abs(ratio - 1) <= HPA_TOLERANCE else math.ceil(ready_messages / self.threshold)
        wanted = min(max(wanted, self.min_pods), self.max_pods)
        self.recommendations.append((now, wanted))
        while self.recommendations[0][0] < now - self.scale_down_window_s:
            self.recommendations.popleft()
        if wanted > current:
            return min(wanted, current + max(current, 4))  # max(100%, 4 pods) per sync
        stabilised = max(pods for _, pods in self.recommendations)
        if stabilised < current and now - self.last_down_at >= 30:
            self.last_down_at = now
            return max(stabilised, math.ceil(current / 2))  # at most 50% per 30 s
        return current


@dataclass
class Result:
    threshold: float
    jobs: int
    wait_p50_ms: float
    wait_p99_ms: float
    wait_p99_outside_step_ms: float
    wait_max_ms: float
    worker_minutes: float
    peak_pods: int


def simulate(threshold: float, args: argparse.Namespace) -> Result:
    rng = np.random.default_rng(args.seed)
    scaler = Autoscaler(threshold, args.min_pods, args.max_pods, args.scale_down_window)
    queue: deque[list[float]] = deque()  # [arrival time, jobs] cohorts, oldest first
    waits: list[tuple[float, float, float]] = []  # (arrival s, wait s, jobs)
    pods_ready, pending = args.min_pods, deque()  # pending: times new pods become ready
    wanted, pod_seconds, peak, jobs, carry = args.min_pods, 0.0, args.min_pods, 0, 0.0
    next_sync = HPA_SYNC_S
    for index in range(int(DURATION_S / STEP_S)):
        now = index * STEP_S
        while pending and pending[0] <= now:
            pending.popleft()
            pods_ready += 1
        arrived = int(rng.poisson(arrival_rate(now) * STEP_S))
        jobs += arrived
        if arrived:
            queue.append([now, float(arrived)])
        capacity = pods_ready * args.per_worker * STEP_S + carry
        carry = _serve(queue, waits, now, capacity)
        if now >= next_sync:
            next_sync += HPA_SYNC_S
            depth = sum(cohort[1] for cohort in queue)
            ready_messages = max(depth - PREFETCH_PER_WORKER * pods_ready, 0.0)
            current = pods_ready + len(pending)
            wanted = scaler.decide(now, current, ready_messages)
            pods_ready, pending = _apply(wanted, pods_ready, pending, now + args.pod_start_s)
        pod_seconds += (pods_ready + len(pending)) * STEP_S  # a starting pod is paid for too
        peak = max(peak, pods_ready + len(pending))
    arrival_s, wait_s, weights = (np.array(column) for column in zip(*waits, strict=True))
    outside = (arrival_s < STEP_WINDOW_S[0]) | (arrival_s >= STEP_WINDOW_S[1])
    return Result(
        threshold=threshold,
        jobs=jobs,
        wait_p50_ms=1000 * _weighted_quantile(wait_s, weights, 0.50),
        wait_p99_ms=1000 * _weighted_quantile(wait_s, weights, 0.99),
        wait_p99_outside_step_ms=1000 * _weighted_quantile(wait_s[outside], weights[outside], 0.99),
        wait_max_ms=1000 * float(wait_s.max()),
        worker_minutes=pod_seconds / 60,
        peak_pods=peak,
    )


def _serve(queue: deque[list[float]], waits: list[tuple[float, float, float]], now: float, capacity: float) -> float:
    """Take up to `capacity` jobs, oldest first; return unused fractional capacity (< 1 job)."""
    while queue and capacity >= 1:
        cohort = queue[0]
        taken = min(cohort[1], math.floor(capacity))
        waits.append((cohort[0], now - cohort[0], taken))
        cohort[1] -= taken
        capacity -= taken
        if cohort[1] <= 0:
            queue.popleft()
    return capacity if queue else 0.0


def _apply(wanted: int, ready: int, pending: deque[float], ready_at: float) -> tuple[int, deque[float]]:
    current = ready + len(pending)
    if wanted > current:
        pending.extend([ready_at] * (wanted - current))
    while wanted < ready + len(pending):
        if pending:
            pending.pop()  # a pod still starting is removed first
        else:
            ready -= 1  # it finishes its batch; its prefetched jobs go back to the queue
    return ready, pending


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1])])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[10, 40, 150], help="ready jobs per worker")
    parser.add_argument("--per-worker", type=float, default=190.0, help="images/s one worker pod serves")
    parser.add_argument("--pod-start-s", type=float, default=20.0, help="seconds from scale-up to serving")
    parser.add_argument("--scale-down-window", type=float, default=600.0, help="stabilisation window, s")
    parser.add_argument("--min-pods", type=int, default=2)
    parser.add_argument("--max-pods", type=int, default=40)
    parser.add_argument("--seed", type=int, default=14)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mean_rate = sum(arrival_rate(t) for t in np.arange(0, DURATION_S, 1.0)) / DURATION_S
    print(
        f"{DURATION_S / 60:.0f} min, mean {mean_rate:.0f} jobs/s, peak {max(map(arrival_rate, range(1800))):.0f}/s; "
        f"{args.per_worker:.0f} images/s per worker, pods start in {args.pod_start_s:.0f} s, "
        f"scale-down window {args.scale_down_window:.0f} s, {args.min_pods}-{args.max_pods} pods"
    )
    ideal = mean_rate / args.per_worker * DURATION_S / 60
    print(f"worker-minutes if capacity followed demand exactly: {ideal:.0f}\n")
    print(
        "| threshold (ready jobs per worker) | jobs | queue wait p50 ms | p99 ms | p99 ms outside the step "
        "| max ms | worker-minutes | peak pods |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for threshold in args.thresholds:
        r = simulate(threshold, args)
        print(
            f"| {r.threshold:g} | {r.jobs} | {r.wait_p50_ms:.0f} | {r.wait_p99_ms:.0f} "
            f"| {r.wait_p99_outside_step_ms:.0f} | {r.wait_max_ms:.0f} "
            f"| {r.worker_minutes:.0f} | {r.peak_pods} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
