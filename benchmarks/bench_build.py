"""Builder throughput against a bare loop of the same pipeline calls (CPU, tiny models; not a test).

    python benchmarks/bench_build.py                          # 100 origins x 4 prompts, 3 repeats each
    python benchmarks/bench_build.py --origins 50 --repeats 5 --steps 8
    python benchmarks/bench_build.py --repeats 0 --profile    # cProfile of one builder and one bare run

What is measured: `oripid.builders.build.build(workdir)` on a fresh workspace each repeat (train
split only, SD2's tiny variant at its 64 px, generated shards only: the plan's origin shards are
dropped so that both sides make the same images), against a bare loop that loads the same pipeline
with `load_pipeline(..., variant="tiny")` and calls it on the same batches with the same prompts,
images, per-image generators and call arguments and `output_type="np"`, and nothing else (no
encoding, no tar). Inputs of the bare loop (origin images loaded and resized, prompts, seeds) are
prepared before its clock starts. Both sides run `torch.set_num_threads(build.cpu_threads)` (the
builder does so itself; the bare loop is given the same count). Runs alternate bare, builder, bare,
builder ... after a warm-up of each. Pipeline load is timed on both sides (the builder's through a
wrapper around `load_pipeline`), and ratios are given both without it (throughput, the goal:
builder >= 0.95x bare) and with it. The time inside the pipeline calls is also summed on both sides
(the builder's by wrapping `Img2ImgRunner._call`), which splits the builder's extra time into
slower calls and its own work between them ("rest"); process and main-thread CPU time show what the
background writer thread costs. Figures are medians over the repeats; ORIPID_TINY_CACHE points at a
temporary folder, filled during the warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import gc
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parents[1]
MODEL = "sd2"
GOAL = 0.95


@dataclasses.dataclass(frozen=True)
class Workload:
    origins: int
    prompts: int
    steps: int
    strength: float | None
    batch_size: int
    max_samples: int
    threads: int


@dataclasses.dataclass
class Batch:
    images: list
    prompts: list[str]
    seeds: list[int]


@dataclasses.dataclass
class Timing:
    side: str  # "bare" or "builder"
    images: int
    load_s: float
    calls_s: float  # inside the pipeline calls (generators made, pipeline called), summed
    total_s: float  # from the call to the end, pipeline load included
    cpu_s: float  # CPU time of the whole process (all threads) over total_s
    main_cpu_s: float  # CPU time of the calling thread alone; the rest is the builder's writer thread

    @property
    def rest_s(self) -> float:
        """Time outside pipeline load and pipeline calls: the builder's own work."""
        return self.total_s - self.load_s - self.calls_s

    @property
    def rate_without_load(self) -> float:
        return self.images / (self.total_s - self.load_s)

    @property
    def rate_with_load(self) -> float:
        return self.images / self.total_s


def make_workspace(root: Path, work: Workload) -> Path:
    """A train-only workspace (tests/builders/workspace.py) and its plan, without origin shards."""
    if str(REPO) not in sys.path:  # tests/ is not installed with the package
        sys.path.insert(0, str(REPO))
    from oripid.builders import layout
    from oripid.builders.plan import ORIGIN_MODEL, make_plan, write_plan
    from oripid.config import load_config
    from tests.builders.workspace import make_workspace as fixture

    model = {"num_inference_steps": work.steps}
    if work.strength is not None:
        model["strength"] = work.strength
    workdir = fixture(
        root,
        splits={"train": work.origins},
        prompts_per_origin=work.prompts,
        config={
            "generate": {"train": {"models": [MODEL], "prompts_per_origin": work.prompts}},
            "models": {MODEL: model},
            "shards": {"max_samples": work.max_samples},
            "build": {"variant": "tiny", "batch_size": work.batch_size, "cpu_threads": work.threads},
        },
    )
    plan = make_plan(load_config(workdir / layout.CONFIG), workdir)
    write_plan(dataclasses.replace(plan, shards=[s for s in plan.shards if s.model != ORIGIN_MODEL]), workdir)
    return workdir


def bare_inputs(workdir: Path) -> tuple[list[Batch], dict]:
    """The builder's batches (consecutive runs of batch_size samples within each shard, in plan
    order) with their inputs ready, and the pipeline call arguments the builder passes."""
    from oripid.builders import layout
    from oripid.builders.build import fit_square, load_origin
    from oripid.builders.generate import settings_for
    from oripid.builders.plan import read_plan, resolution_for
    from oripid.builders.seeds import sample_seed
    from oripid.config import load_config
    from oripid.models_registry.registry import load_registry

    config = load_config(workdir / layout.CONFIG)
    entry = load_registry(workdir).get(MODEL)
    side = resolution_for(config, entry, config.build.variant)
    table = pq.read_table(workdir / layout.PROMPTS_TABLE).to_pylist()
    prompts = {(row["origin_id"], int(row["prompt_idx"])): row["prompt"] for row in table}
    batches = []
    for shard in read_plan(workdir).shards:
        for start in range(0, len(shard.samples), config.build.batch_size):
            chunk = shard.samples[start : start + config.build.batch_size]
            batches.append(
                Batch(
                    images=[fit_square(load_origin(workdir, o), side, config.build.resize) for o, _ in chunk],
                    prompts=[prompts[s] for s in chunk],
                    seeds=[sample_seed(config.seed, MODEL, o, i) for o, i in chunk],
                )
            )
    settings = settings_for(entry, config.models.get(MODEL), side)
    kwargs = {
        "strength": settings.strength,
        "guidance_scale": settings.guidance_scale,
        "num_inference_steps": settings.num_inference_steps,
        **dict(settings.extra),
    }
    return batches, kwargs


def check_same_call(workdir: Path, kwargs: dict) -> None:
    """Stop if the bare loop's arguments are not the ones the builder's runner passes."""
    from oripid.builders import layout
    from oripid.builders.generate import Img2ImgRunner, settings_for
    from oripid.builders.plan import resolution_for
    from oripid.config import load_config
    from oripid.models_registry.loader import load_pipeline
    from oripid.models_registry.registry import load_registry

    config = load_config(workdir / layout.CONFIG)
    entry = load_registry(workdir).get(MODEL)
    settings = settings_for(entry, config.models.get(MODEL), resolution_for(config, entry, "tiny"))
    runner = Img2ImgRunner(load_pipeline(entry, "tiny", device="cpu"), entry, settings)
    if runner.call_kwargs() != kwargs:
        sys.exit(f"bare-loop arguments {kwargs} differ from the builder's {runner.call_kwargs()}")


def run_bare(workdir: Path, batches: list[Batch], kwargs: dict, threads: int) -> Timing:
    from oripid.models_registry.loader import load_pipeline
    from oripid.models_registry.registry import load_registry

    registry = load_registry(workdir)
    torch.set_num_threads(threads)
    gc.collect()
    cpu, main_cpu = time.process_time(), time.thread_time()
    started = time.perf_counter()
    pipeline = load_pipeline(MODEL, variant="tiny", device="cpu", registry=registry)
    load_s = time.perf_counter() - started
    calls_s = 0.0
    for batch in batches:
        call_started = time.perf_counter()
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in batch.seeds]
        pipeline(prompt=batch.prompts, image=batch.images, generator=generators, output_type="np", **kwargs)
        calls_s += time.perf_counter() - call_started
    total_s = time.perf_counter() - started
    cpu, main_cpu = time.process_time() - cpu, time.thread_time() - main_cpu
    return Timing("bare", sum(len(b.seeds) for b in batches), load_s, calls_s, total_s, cpu, main_cpu)


@contextlib.contextmanager
def timed(owner: object, name: str, sink: list[float]) -> Iterator[None]:
    """Replace `owner.name` by a wrapper that appends each call's seconds to `sink`."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - started)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def run_builder(workdir: Path) -> Timing:
    from oripid.builders.build import build
    from oripid.builders.generate import Img2ImgRunner
    from oripid.models_registry import loader

    loads: list[float] = []
    calls: list[float] = []
    gc.collect()
    # `build()` imports `load_pipeline` from the loader module at each call, so the wrapper is seen;
    # `Img2ImgRunner._call` makes the generators and calls the pipeline, as the bare loop does.
    with timed(loader, "load_pipeline", loads), timed(Img2ImgRunner, "_call", calls):
        cpu, main_cpu = time.process_time(), time.thread_time()
        started = time.perf_counter()
        summary = build(workdir)
        total_s = time.perf_counter() - started
        cpu, main_cpu = time.process_time() - cpu, time.thread_time() - main_cpu
    if summary.samples_failed:
        sys.exit(f"{workdir}: {summary.samples_failed} samples failed; the comparison would be unfair")
    return Timing("builder", summary.samples_written, sum(loads), sum(calls), total_s, cpu, main_cpu)


def profile(label: str, call, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(top)
        body = out.getvalue()
        print(f"\n=== cProfile {label}, by {key} (main thread only) ===")
        print(body[body.find("   ncalls") :])


def report(timings: list[Timing], images: int) -> None:
    """Medians per side as a markdown table, then the builder/bare ratios."""
    columns = {
        "pipeline load s": lambda t: t.load_s,
        "pipeline calls s": lambda t: t.calls_s,
        "rest s": lambda t: t.rest_s,
        "total s": lambda t: t.total_s,
        "img/s without load": lambda t: t.rate_without_load,
        "img/s with load": lambda t: t.rate_with_load,
        "CPU s, all threads": lambda t: t.cpu_s,
        "CPU s, main thread": lambda t: t.main_cpu_s,
    }
    med = {
        side: {
            name: statistics.median(get(t) for t in timings if t.side == side)
            for name, get in columns.items()
        }
        for side in ("bare", "builder")
    }
    print(f"\n| run (median of {len(timings) // 2}) | images | " + " | ".join(columns) + " |")
    print("| --- | ---: |" + " ---: |" * len(columns))
    for side, label in (("bare", "bare loop (baseline)"), ("builder", "`build()`")):
        print(f"| {label} | {images} | " + " | ".join(f"{v:.2f}" for v in med[side].values()) + " |")
    without = med["builder"]["img/s without load"] / med["bare"]["img/s without load"]
    with_load = med["builder"]["img/s with load"] / med["bare"]["img/s with load"]
    pairs = [
        b.rate_without_load / a.rate_without_load for a, b in zip(timings[0::2], timings[1::2], strict=True)
    ]
    print(
        f"\nbuilder/bare img/s, medians: x{without:.3f} without pipeline load, x{with_load:.3f} with it; "
        f"each pair without load: {', '.join(f'x{p:.3f}' for p in pairs)}"
    )
    calls = med["builder"]["pipeline calls s"] / med["bare"]["pipeline calls s"]
    print(
        f"pipeline calls take x{calls:.3f} as long inside the builder; the builder's work outside them "
        f"(rest) is {100 * med['builder']['rest s'] / med['builder']['total s']:.1f}% of its total"
    )
    print(
        f"CPU per image: bare {1000 * med['bare']['CPU s, all threads'] / images:.1f} ms, builder "
        f"{1000 * med['builder']['CPU s, all threads'] / images:.1f} ms (main thread "
        f"{1000 * med['builder']['CPU s, main thread'] / images:.1f} ms)"
    )
    print(f"goal builder >= x{GOAL:.2f} bare (without load): {'met' if without >= GOAL else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--origins", type=int, default=100)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per origin")
    parser.add_argument("--steps", type=int, default=4, help="num_inference_steps")
    parser.add_argument("--strength", type=float, default=None, help="default: the registry's (SD2: 0.75)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-samples", type=int, default=32, help="samples per shard")
    parser.add_argument("--threads", type=int, default=1, help="build.cpu_threads, used by both sides")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side")
    parser.add_argument("--profile", action="store_true", help="then cProfile one run of each side")
    args = parser.parse_args()
    work = Workload(
        args.origins, args.prompts, args.steps, args.strength, args.batch_size, args.max_samples, args.threads
    )

    scratch = Path(tempfile.mkdtemp(prefix="bench_build_"))
    os.environ["ORIPID_TINY_CACHE"] = str(scratch / "tiny-cache")
    counter = iter(range(10**6))

    def fresh(w: Workload = work) -> Path:
        return make_workspace(scratch / f"w{next(counter)}", w)

    # Warm-up: build the tiny pipeline once, check the call arguments, run each side on a little work.
    reference = fresh()
    batches, kwargs = bare_inputs(reference)
    check_same_call(reference, kwargs)
    small = dataclasses.replace(work, origins=2)
    small_dir = fresh(small)
    run_bare(small_dir, bare_inputs(small_dir)[0], kwargs, work.threads)
    run_builder(fresh(small))
    images = sum(len(b.seeds) for b in batches)
    print(
        f"{os.cpu_count()} CPUs visible, torch {torch.__version__}, {work.threads} torch thread(s) on both sides; "
        f"{MODEL} tiny, {images} images ({work.origins} origins x {work.prompts} prompts), batch "
        f"{work.batch_size}, {len(batches)} calls, {kwargs}",
        flush=True,
    )

    timings: list[Timing] = []
    for repeat in range(args.repeats):
        for side in ("bare", "builder"):
            workdir = fresh()
            load_before = os.getloadavg()[0]
            timing = (
                run_bare(workdir, batches, kwargs, work.threads) if side == "bare" else run_builder(workdir)
            )
            timings.append(timing)
            shutil.rmtree(workdir, ignore_errors=True)
            print(
                f"repeat {repeat + 1} {side:7s}: {timing.images} images, total {timing.total_s:.2f} s "
                f"(load {timing.load_s:.2f}, pipeline calls {timing.calls_s:.2f}, rest {timing.rest_s:.2f}), "
                f"{timing.rate_without_load:.2f} img/s without load; CPU {timing.cpu_s:.2f} s "
                f"(main thread {timing.main_cpu_s:.2f}); load avg {max(load_before, os.getloadavg()[0]):.1f}",
                flush=True,
            )
    if timings:
        report(timings, images)

    if args.profile:
        profile("bare loop", lambda: run_bare(fresh(), batches, kwargs, work.threads), 25)
        profile("build()", lambda: run_builder(fresh()), 25)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
