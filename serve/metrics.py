"""Prometheus text metrics, hand-rolled (no client library): requests, latency, model version.

One process keeps its own counters; with several uvicorn workers each answers for itself
(scrape them per worker, or run one worker per container as is usual).
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters and a latency histogram per route, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)
        self.counters: dict[str, int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            h = self.hist[route]
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
                    break
            else:
                h[-1] += 1
            self.sums[route] += seconds

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def render(self, model_name: str, model_version: str, cold_start: bool, gauges: dict[str, float]) -> str:
        out = [
            "# HELP prox_http_requests_total HTTP requests by method, route and status.",
            "# TYPE prox_http_requests_total counter",
        ]
        with self._lock:
            for (m, r, s), n in sorted(self.requests.items()):
                out.append(f'prox_http_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}')
            out += [
                "# HELP prox_http_request_duration_seconds Request latency by route.",
                "# TYPE prox_http_request_duration_seconds histogram",
            ]
            for route, h in sorted(self.hist.items()):
                acc = 0
                for b, n in zip(BUCKETS, h, strict=False):
                    acc += n
                    out.append(f'prox_http_request_duration_seconds_bucket{{route="{route}",le="{b}"}} {acc}')
                acc += h[-1]
                out.append(f'prox_http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {acc}')
                out.append(
                    f'prox_http_request_duration_seconds_sum{{route="{route}"}} {self.sums[route]:.6f}'
                )
                out.append(f'prox_http_request_duration_seconds_count{{route="{route}"}} {acc}')
            for name, n in sorted(self.counters.items()):
                out += [f"# TYPE prox_{name}_total counter", f"prox_{name}_total {n}"]
        out += [
            "# HELP prox_model_info The model serving requests (value 1).",
            "# TYPE prox_model_info gauge",
            f'prox_model_info{{model_name="{model_name}",model_version="{model_version}",'
            f'cold_start="{str(cold_start).lower()}"}} 1',
        ]
        for name, value in sorted(gauges.items()):
            out += [f"# TYPE prox_{name} gauge", f"prox_{name} {value}"]
        return "\n".join(out) + "\n"
