"""Ingest throughput and memory on generated images (not a test: run it by hand).

    python benchmarks/bench_ingest.py                     # 2,500 and 10,000 images
    python benchmarks/bench_ingest.py --sizes 10000 --write-docs --machine "2-core CPU sandbox"

Images are smooth random colour fields (distinct perceptual hashes), 512x384 JPEG quality 90,
written once to a cache folder. Each size runs in a fresh process so that its peak RSS is its
own; flat memory shows as peak RSS barely moving while the image count grows 4x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from docs_section import DOCS, replace_docs_section
from PIL import Image

SECTION = "## Ingest"


def make_images(folder: Path, n: int, width: int = 512, height: int = 384) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    rng = np.random.default_rng(have)
    for i in range(have, n):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        image.save(folder / f"img_{i:07d}.jpg", quality=90)


def child(src: Path, n: int, workers: int | None) -> dict:
    from oripid.builders.ingest import ingest_origins

    # A view of the first n images: a folder of symlinks, so all sizes share one cache.
    view = Path(tempfile.mkdtemp(prefix=f"bench_src_{n}_"))
    for i in range(n):
        os.symlink(src / f"img_{i:07d}.jpg", view / f"img_{i:07d}.jpg")
    work = Path(tempfile.mkdtemp(prefix=f"bench_work_{n}_"))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    summary = ingest_origins(view, work, progress=False, workers=workers)
    seconds = time.perf_counter() - started
    return {
        # The machine is shared: the 1-minute load average says how much else was running.
        "load_average": round(max(load_before, os.getloadavg()[0]), 1),
        "images": n,
        "ok": summary.ok,
        "workers": summary.workers,
        "decode_images_per_second": summary.images_per_second,
        "end_to_end_images_per_second": round(n / seconds, 1),
        "seconds": round(seconds, 2),
        "peak_rss_main_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "workdir": str(work),
    }


def write_docs(results: list[dict], machine: str) -> None:
    lines = [
        SECTION,
        "",
        f"`python benchmarks/bench_ingest.py` on a {machine} ({os.cpu_count()} cores visible), "
        f"Python {sys.version.split()[0]}; generated 512x384 JPEG (q90) colour fields, all accepted; "
        "each size in a fresh process. Decode rate counts decoding, hashing and writing the normalised "
        "PNG; end-to-end adds deduplication, id assignment and the manifest. The sandbox is shared with "
        "other jobs: a 1-minute load average above the core count means the figures are low.",
        "",
        "| images | workers | decode img/s | end-to-end img/s | seconds | peak RSS main (MiB) | peak RSS per worker (MiB) | load avg |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['images']:,} | {r['workers']} | {r['decode_images_per_second']} | "
            f"{r['end_to_end_images_per_second']} | {r['seconds']} | {r['peak_rss_main_mib']} | {r['peak_rss_worker_mib']} | {r['load_average']} |"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = last["peak_rss_main_mib"] - first["peak_rss_main_mib"]
        per_image = growth * 1024 / max(last["images"] - first["images"], 1)
        lines += [
            "",
            f"Memory: from {first['images']:,} to {last['images']:,} images the main process's peak RSS grew "
            f"{growth:.1f} MiB (about {per_image:.2f} KiB per image, never pixels; at these sizes fixed "
            "costs dominate, so see the next section, which takes the same code to a million rows). "
            "Workers hold one chunk of images at a time, so their peak does not depend on the count.",
        ]
    replace_docs_section(SECTION, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 10000])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "oripid_bench_images")
    parser.add_argument("--machine", default="2-core CPU sandbox")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.cache, args.child, args.workers)))
        return
    make_images(args.cache, max(args.sizes))
    results = []
    for n in sorted(args.sizes):
        cmd = [sys.executable, __file__, "--child", str(n), "--cache", str(args.cache)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        results.append(result)
        print(json.dumps(result))
    if args.write_docs:
        write_docs(results, args.machine)
        print(f"wrote {DOCS}")


if __name__ == "__main__":
    main()
