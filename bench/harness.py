"""What every benchmark shares: each side runs in its own process (so peak RSS is its own),
prints one JSON line of figures, and the pair is reported as rates and a ratio."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

RUN_DIR = Path("bench-run")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, *args: str) -> dict[str, float]:
    """Run `script --child ARGS...` and return the figures it printed last."""
    out = subprocess.run([sys.executable, script, "--child", *args], check=True,
                         capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def report(results: dict[int, dict[str, dict[str, float]]], unit: str, what: str,
           floor: str) -> None:
    """Print each size's tracker and floor rates, their ratio, and how peak RSS grows."""
    for n, pair in results.items():
        t, f = pair["tracker"], pair["floor"]
        print(f"{n:>9,} {unit:<6} tracker {what}: {t['items'] / t['seconds']:>9,.0f} {unit}/s "
              f"({t['seconds']:.2f} s, peak RSS {t['peak_rss_mb']:.0f} MB)")
        print(f"{'':>16}{floor}: {f['items'] / f['seconds']:>9,.0f} {unit}/s "
              f"({f['seconds']:.2f} s, peak RSS {f['peak_rss_mb']:.0f} MB)")
        print(f"{'':>16}ratio (tracker time / floor time): {t['seconds'] / f['seconds']:.2f}x")
    sizes = sorted(results)
    growth = (results[sizes[-1]]["tracker"]["peak_rss_mb"]
              - results[sizes[0]]["tracker"]["peak_rss_mb"])
    print(f"tracker peak RSS grows {growth:+.0f} MB from {sizes[0]:,} to {sizes[-1]:,} {unit}")


#: Where a benchmark's figures for `bench/all.py`'s table start: one line per target measured.
RESULT_PREFIX = "RESULT "


def emit_result(target: str, engine: str, tracker: float, floor: float | None, unit: str,
                goal: str, rss_mb: float | None = None, note: str = "") -> None:
    """Print one target's figures as a `RESULT {json}` line. `tracker` and `floor` are in
    `unit` (seconds unless said otherwise); the ratio is tracker / floor; `goal` is what the
    issue asks (e.g. "<= 2x", "< 0.25 s")."""
    ratio = tracker / floor if floor else None
    print(RESULT_PREFIX + json.dumps({
        "target": target, "engine": engine, "tracker": tracker, "floor": floor, "unit": unit,
        "ratio": ratio, "goal": goal, "rss_mb": rss_mb, "note": note}), flush=True)
