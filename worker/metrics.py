"""Prometheus metrics in the text exposition format, with no client library.

The worker needs a handful of counters, gauges and one latency histogram; a
registry of a few dozen lines beats a dependency.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

Labels = tuple[tuple[str, str], ...]


def _number(value: float) -> str:
    """Full precision: ``:g`` would print 1234567 as 1.23457e+06 and stall counters."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


class Registry:
    """Counters, gauges and histograms, rendered on demand."""

    def __init__(self) -> None:
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._buckets: dict[str, list[float]] = {}
        self._hist: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def describe(self, name: str, kind: str, text: str, buckets: list[float] | None = None) -> None:
        self._help[name] = (kind, text)
        if buckets is not None:
            self._buckets[name] = sorted(buckets)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self._values[name][key] = self._values[name].get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        buckets = self._buckets[name]
        counts = self._hist[name].setdefault(key, [0.0] * (len(buckets) + 2))
        counts[bisect.bisect_left(buckets, value)] += 1
        counts[-1] += value  # running sum in the last slot

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, text) in sorted(self._help.items()):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "histogram":
                buckets = self._buckets[name]
                for key, counts in self._hist[name].items():
                    cumulative = 0.0
                    for bound, count in zip([*buckets, float("inf")], counts[:-1], strict=True):
                        cumulative += count
                        le = "+Inf" if bound == float("inf") else repr(bound)
                        lines.append(
                            f"{name}_bucket{_labels((*key, ('le', le)))} {_number(cumulative)}"
                        )
                    lines.append(f"{name}_sum{_labels(key)} {_number(counts[-1])}")
                    lines.append(f"{name}_count{_labels(key)} {_number(cumulative)}")
            else:
                for key, value in self._values[name].items():
                    lines.append(f"{name}{_labels(key)} {_number(value)}")
        return "\n".join(lines) + "\n"
