"""Wall clock of `oripid demo` as a user runs it: cold, then rerun (not a test: run it by hand).

    python benchmarks/bench_demo.py                 # 2 cold runs, each followed by a rerun
    python benchmarks/bench_demo.py --repeats 1

What is measured: the seconds from starting `oripid demo --workdir W` in a subprocess until it
exits, Python start-up and imports included. A cold run gets a fresh workdir and a fresh, empty
ORIPID_TINY_CACHE, so it also builds and saves the seven tiny pipelines; the rerun repeats the same
command on the same workdir and cache (resume: every stage finds its work done). The ratio
rerun/cold is taken within each pair. The demo's own `[demo  t s] stage` lines give the cold run's
time per stage. The goal is a cold run under 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 180.0
STAGE_LINE = re.compile(r"^\[demo\s+([0-9.]+)s\] (.+)$")


def demo_command(workdir: Path) -> list[str]:
    """The installed `oripid` script beside this interpreter, as `make demo` runs it."""
    script = Path(sys.executable).with_name("oripid")
    if script.is_file():
        return [str(script), "demo", "--workdir", str(workdir)]
    return [sys.executable, "-m", "oripid", "demo", "--workdir", str(workdir)]


def run_demo(workdir: Path, cache: Path, log: Path) -> dict:
    """One `oripid demo` run; its seconds, the demo's stage start times and the load average."""
    env = {**os.environ, "ORIPID_TINY_CACHE": str(cache)}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(demo_command(workdir), env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    if result.returncode != 0:
        sys.exit(f"`oripid demo` failed with exit code {result.returncode}; log tail:\n{text[-3000:]}")
    stages = [(float(m[1]), m[2]) for line in text.splitlines() if (m := STAGE_LINE.match(line.strip()))]
    return {
        "seconds": seconds,
        "stages": stages,
        "load_average": max(load_before, os.getloadavg()[0]),
    }


def stage_durations(stages: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Each stage's seconds: the next stage's start minus its own (the last, 'done', is dropped)."""
    return [(name, nxt - start) for (start, name), (nxt, _) in zip(stages, stages[1:], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2, help="cold + rerun pairs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdirs and caches")
    args = parser.parse_args()

    print(
        f"{os.cpu_count()} CPUs visible, Python {sys.version.split()[0]}; command: {' '.join(demo_command(Path('W')))}"
    )
    pairs = []
    for repeat in range(args.repeats):
        root = Path(tempfile.mkdtemp(prefix="bench_demo_"))
        workdir, cache = root / "demo-workdir", root / "tiny-cache"
        cold = run_demo(workdir, cache, root / "cold.log")
        rerun = run_demo(workdir, cache, root / "rerun.log")
        pairs.append((cold, rerun))
        print(
            f"repeat {repeat + 1}: cold {cold['seconds']:.1f} s (load avg {cold['load_average']:.1f}), "
            f"rerun {rerun['seconds']:.1f} s (load avg {rerun['load_average']:.1f}), "
            f"rerun/cold x{rerun['seconds'] / cold['seconds']:.3f}",
            flush=True,
        )
        for name, seconds in stage_durations(cold["stages"]):
            print(f"    cold stage {seconds:6.1f} s  {name}")
        for name, seconds in stage_durations(rerun["stages"]):
            print(f"    rerun stage {seconds:5.1f} s  {name}")
        if args.keep:
            print(f"    kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    cold_s = [c["seconds"] for c, _ in pairs]
    rerun_s = [r["seconds"] for _, r in pairs]
    cold_median = statistics.median(cold_s)
    print("\n| run | seconds (each) | median | vs cold |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| cold | {', '.join(f'{s:.1f}' for s in cold_s)} | {cold_median:.1f} | x1.00 |")
    print(
        f"| rerun (resume) | {', '.join(f'{s:.1f}' for s in rerun_s)} | {statistics.median(rerun_s):.1f} | "
        f"x{statistics.median(r / c for c, r in zip(cold_s, rerun_s, strict=True)):.3f} |"
    )
    verdict = "meets" if cold_median < GOAL_SECONDS else "misses"
    print(f"\ncold median {cold_median:.1f} s {verdict} the goal of {GOAL_SECONDS:.0f} s")


if __name__ == "__main__":
    main()
