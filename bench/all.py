"""Every benchmark in `bench/`, one after another, then one markdown table of their results.

    python bench/all.py [--quick] [--engine sqlite|postgresql|both] [--only NAME ...]
                        [--enqueue-items N] [--ingest-items N] [--pack-items N]
                        [--e2e-items N] [--idle-seconds S]

Runs each of enqueue.py, ingest.py, pack_upload.py, e2e.py, idle.py, startup.py that exists
(a missing one is skipped with a line), streaming its output through, and collects the
`RESULT {json}` lines it prints (`harness.emit_result`). The table, also written to
bench-run/results.md, has one row per result: | target | engine | tracker | floor | ratio |
goal | peak RSS | note |.

`--quick` uses small sizes for a smoke run (enqueue 100k items, ingest and pack 10k, e2e 10k,
idle 5 s); the size options override it. A size or `--engine` is passed only to the scripts
whose `--help` lists that option; the others run at their own defaults (said in a line).
Exits 1 if a script failed (the table is printed anyway), never for a missed goal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import RESULT_PREFIX, RUN_DIR

BENCH_DIR = Path(__file__).resolve().parent
SCRIPTS = ("enqueue.py", "ingest.py", "pack_upload.py", "e2e.py", "idle.py", "startup.py")


@dataclass(frozen=True)
class Size:
    """A script's size option: the flag it takes, all.py's own flag, and the quick value."""

    flag: str
    dest: str
    quick: str
    help: str


SIZES = {
    "enqueue.py": Size("--items", "enqueue_items", "100000", "items enqueue.py enqueues"),
    "ingest.py": Size("--items", "ingest_items", "10000", "lines ingest.py ingests"),
    "pack_upload.py": Size("--items", "pack_items", "10000", "items pack_upload.py packs"),
    "e2e.py": Size("--items", "e2e_items", "10000", "items e2e.py runs end to end"),
    "idle.py": Size("--seconds", "idle_seconds", "5", "seconds idle.py watches an idle daemon"),
}


@dataclass
class Run:
    script: str
    code: int | None = None
    seconds: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke run: enqueue 100k, ingest/pack/e2e 10k, "
                             "idle 5 s")
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default=None,
                        help="passed to the scripts that take it (their default: both)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these scripts (e.g. enqueue ingest.py)")
    for size in SIZES.values():
        option = "--" + size.dest.replace("_", "-")
        parser.add_argument(option, dest=size.dest, metavar="N", help=size.help)
    args = parser.parse_args(argv)
    if args.only:
        wanted = {name if name.endswith(".py") else f"{name}.py" for name in args.only}
        unknown = wanted - set(SCRIPTS)
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(SCRIPTS)}")
        args.only = wanted
    return args


def _accepts(script: Path, flags: set[str]) -> set[str]:
    """Which of `flags` the script's `--help` lists."""
    if not flags:
        return set()
    try:
        shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                               text=True, timeout=120, check=False).stdout
    except subprocess.TimeoutExpired:
        return set()
    return {flag for flag in flags if flag in shown}


def _script_args(script: Path, args: argparse.Namespace) -> list[str]:
    wanted: dict[str, str] = {}
    size = SIZES.get(script.name)
    if size is not None:
        value = getattr(args, size.dest) or (size.quick if args.quick else None)
        if value is not None:
            wanted[size.flag] = value
    if args.engine is not None:
        wanted["--engine"] = args.engine
    accepted = _accepts(script, set(wanted))
    passed: list[str] = []
    for flag, value in wanted.items():
        if flag in accepted:
            passed += [flag, value]
        else:
            print(f"all.py: {script.name} takes no {flag}; running it without {flag} {value}",
                  flush=True)
    return passed


def _run(script: Path, extra: list[str]) -> Run:
    """Run one benchmark, its output streamed through; its RESULT lines collected."""
    run = Run(script.name)
    command = [sys.executable, str(script), *extra]
    print(f"\n=== {script.name} {' '.join(extra)}".rstrip(), flush=True)
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith(RESULT_PREFIX):
                try:
                    run.results.append(json.loads(line[len(RESULT_PREFIX):]))
                except json.JSONDecodeError:
                    print(f"all.py: {script.name}: cannot read this RESULT line", flush=True)
        run.code = process.wait()
    finally:
        if process.poll() is None:  # interrupted: stop the benchmark we started
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    run.seconds = time.monotonic() - start
    print(f"=== {script.name}: exit {run.code} after {run.seconds:.0f} s", flush=True)
    return run


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        if value >= 100:
            return f"{value:.0f} s"
        if value >= 10:
            return f"{value:.1f} s"
        if value >= 1:
            return f"{value:.2f} s"
        return f"{value:.3f} s"
    if unit == "MB":
        return f"{value:.0f} MB" if value >= 10 else f"{value:.1f} MB"
    if unit.startswith("%"):  # "%", "% core"
        return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(runs: list[Run]) -> str:
    lines = ["| target | engine | tracker | floor | ratio | goal | peak RSS | note |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for result in run.results:
            unit = str(result.get("unit") or "s")
            ratio = result.get("ratio")
            lines.append("| " + " | ".join(_cell(cell) for cell in (
                result.get("target", "?"), result.get("engine", "?"),
                _figure(result.get("tracker"), unit), _figure(result.get("floor"), unit),
                "–" if ratio is None else f"{ratio:.2f}x", result.get("goal", ""),
                _figure(result.get("rss_mb"), "MB"), result.get("note", ""))) + " |")
        if run.code != 0:
            lines.append(f"| {run.script} | – | – | – | – | – | – | exited with code "
                         f"{run.code}; see its output above |")
        elif not run.results:
            lines.append(f"| {run.script} | – | – | – | – | – | – | printed no RESULT line |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    runs: list[Run] = []
    skipped: list[str] = []
    interrupted = False
    try:
        for name in SCRIPTS:
            if args.only and name not in args.only:
                continue
            script = BENCH_DIR / name
            if not script.exists():
                print(f"all.py: {name} does not exist (yet); skipped", flush=True)
                skipped.append(name)
                continue
            runs.append(_run(script, _script_args(script, args)))
    except KeyboardInterrupt:
        interrupted = True
        print("\nall.py: interrupted; the results so far:", flush=True)
    text = table(runs)
    print("\n" + text)
    if skipped:
        print(f"\nnot run (missing): {', '.join(skipped)}")
    RUN_DIR.mkdir(exist_ok=True)
    (RUN_DIR / "results.md").write_text(text + "\n", encoding="utf-8")
    if interrupted:
        return 130
    return 1 if any(run.code != 0 for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
