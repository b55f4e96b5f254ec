"""Feature extraction throughput: SD2's full-size VAE encoder (random weights; compute does not
depend on them) on 256 x 256 images, as `oripid features` runs it, against the bare
`vae.encode` call on the same batches in the same process.

    python benchmarks/bench_features.py                  # CPU here; on a GPU it uses CUDA + fp16
    python benchmarks/bench_features.py --images 256 --batch-size 32

The paper reports 1.59e-4 s per image for extraction (on GPUs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from oripid.eval.features import encode, to_model_input
    from oripid.models_registry.architecture import build_component
    from oripid.models_registry.registry import load_registry

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    vae = build_component(load_registry().get("sd2").architecture["vae"], device=device, dtype=dtype)
    for parameter in vae.parameters():
        parameter.data.normal_(0, 0.02)
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((512, 512, 3)) * 255).astype(np.uint8)) for _ in range(args.images)]
    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]
    pixels = [to_model_input(batch, 256) for batch in batches]

    def bare():
        with torch.no_grad():
            for batch in pixels:
                vae.encode(batch.to(device=device, dtype=dtype)).latent_dist.mean.cpu()

    def oripid_path():  # resize + normalise from PIL, encode, flatten, as extract_shard does
        for batch in batches:
            encode(vae, to_model_input(batch, 256), "mean")

    timings: dict[str, list[float]] = {"bare vae.encode": [], "oripid features path": []}
    bare()  # warm-up
    for _ in range(args.repeats):
        for name, run in (("bare vae.encode", bare), ("oripid features path", oripid_path)):
            sync()
            start = time.perf_counter()
            run()
            sync()
            timings[name].append(time.perf_counter() - start)
    name = (
        torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    )
    print(f"device: {name}; {args.images} images, batch {args.batch_size}, 256 px, {str(dtype)[6:]}")
    base = statistics.median(timings["bare vae.encode"])
    for label, values in timings.items():
        seconds = statistics.median(values)
        print(
            f"{label:24} {args.images / seconds:8.2f} img/s  {seconds / args.images:.2e} s/img  "
            f"x{base / seconds:.2f} of bare"
        )


if __name__ == "__main__":
    main()
