"""Rolling rate / latency statistics for /diagnostics (pure Python, no ROS import)."""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RollingStats:
    """Event rate and latency percentiles over a sliding window of recent events."""

    window: int = 1000
    """number of most recent events kept"""
    _times: deque = field(default_factory=deque, repr=False)
    _latencies: deque = field(default_factory=deque, repr=False)
    counts: Counter = field(default_factory=Counter)
    """free-form counters (dropped, rejected_<reason>, ...) reported next to the rates"""

    def tick(self, latency_s: float | None = None, now: float | None = None) -> None:
        """Record one event (optionally with its latency in seconds)."""
        self._times.append(time.monotonic() if now is None else now)
        if len(self._times) > self.window:
            self._times.popleft()
        if latency_s is not None:
            self._latencies.append(float(latency_s))
            if len(self._latencies) > self.window:
                self._latencies.popleft()

    @property
    def rate_hz(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        """Latency percentile q in [0, 100], in milliseconds (nan with no samples)."""
        if not self._latencies:
            return float("nan")
        return float(np.percentile(np.fromiter(self._latencies, float), q) * 1e3)

    def summary(self) -> dict[str, str]:
        """Key/values for a diagnostic_msgs/DiagnosticStatus."""
        out = {"rate_hz": f"{self.rate_hz:.2f}", "events": str(len(self._times))}
        if self._latencies:
            out["latency_p50_ms"] = f"{self.latency_ms(50):.3f}"
            out["latency_p99_ms"] = f"{self.latency_ms(99):.3f}"
        out.update({k: str(v) for k, v in sorted(self.counts.items())})
        return out
