"""GPU throughput of SD2 img2img at full size: the builder's generation path against the naive
one-image-per-call diffusers loop, in the same process.

The full-size SD2 architecture comes from the registry with random weights (compute does not
depend on the weight values; no download). Text goes through the full-size CLIP text encoder with
the byte-level tiny tokenizer (ids fit its vocabulary). Per image at 512 px, 50 steps, strength
0.75 with classifier-free guidance, the FLOP count from `oripid plan --estimate` is ~63.1 TFLOP.

    python benchmarks/bench_gpu_sd2.py                 # on a GPU: naive loop vs builder levers
    python benchmarks/bench_gpu_sd2.py --smoke         # CPU check of the script itself (tiny sizes)

Reports images/s, the ratio to the naive loop, and model-FLOP utilisation against --peak-tflops
(H100 SXM dense bf16: 989; H100 PCIe: 756; H200: 989).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image


def build_pipeline(device: str, dtype: torch.dtype):
    from oripid.models_registry.architecture import build_architecture
    from oripid.models_registry.registry import load_registry
    from oripid.models_registry.tiny import sd2_img2img

    entry = load_registry().get("sd2")
    parts = build_architecture(entry, device=device, dtype=dtype)
    for module in parts.values():  # random weights: keep activations bounded so fp16 stays finite
        for parameter in module.parameters():
            parameter.data.normal_(0, 0.02)
    pipeline = sd2_img2img(parts["vae"], parts["text_encoder"], parts["unet"])
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, entry


def images_per_second(run, images: int, repeats: int, sync) -> tuple[float, list[float]]:
    run()  # warm-up (and compilation)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes on CPU: checks the script, not speed"
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--strength", type=float, default=0.75)
    parser.add_argument("--batch-sizes", default="8,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile of the UNet")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.size, args.steps, args.batch_sizes, args.repeats = 2, 64, 2, "2", 1
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    from oripid.builders.estimate import flops_per_image
    from oripid.builders.generate import Img2ImgRunner, settings_for
    from oripid.builders.shard_writer import encode_image

    rng = np.random.default_rng(0)
    origin = Image.fromarray((rng.random((args.size, args.size, 3)) * 255).astype(np.uint8))
    prompts = [f"a watercolor painting, variation {i}" for i in range(args.images)]
    results = {}

    def naive(pipeline):
        # What a first script does: one image per call, default settings, PIL output.
        def run():
            for i, prompt in enumerate(prompts):
                pipeline(
                    prompt=prompt,
                    image=origin,
                    strength=args.strength,
                    guidance_scale=7.5,
                    num_inference_steps=args.steps,
                    generator=torch.Generator().manual_seed(i),
                )

        return run

    def builder(pipeline, entry, batch_size):
        runner = Img2ImgRunner(pipeline, entry, settings_for(entry, None, args.size))
        runner.settings = type(runner.settings)(args.strength, 7.5, args.steps, args.size, args.size)

        def run():
            for start in range(0, args.images, batch_size):
                chunk = prompts[start : start + batch_size]
                for result in runner.generate(
                    [origin] * len(chunk), chunk, list(range(start, start + len(chunk)))
                ):
                    encode_image(result.image, "jpg", 95)  # the writer's encode, here inline (worst case)

        return run

    dtypes = [torch.float16] if device == "cuda" else [torch.float32]
    pipeline, entry = build_pipeline(device, dtypes[0])
    tflop = flops_per_image(entry, args.size, args.steps, args.strength) / 1e12
    half = str(dtypes[0]).removeprefix("torch.")
    naive_label = f"naive {half}, 1 image/call"
    results[naive_label], _ = images_per_second(naive(pipeline), args.images, args.repeats, sync)
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        results[f"builder {half}, batch {batch}"], _ = images_per_second(
            builder(pipeline, entry, batch), args.images, args.repeats, sync
        )
    if device == "cuda":
        del pipeline
        torch.cuda.empty_cache()
        pipeline, entry = build_pipeline(device, torch.bfloat16)
        batch = int(args.batch_sizes.split(",")[-1])
        results[f"builder bf16, batch {batch}"], _ = images_per_second(
            builder(pipeline, entry, batch), args.images, args.repeats, sync
        )
        if args.compile:
            pipeline.unet = torch.compile(pipeline.unet, mode="max-autotune-no-cudagraphs")
            results[f"builder bf16 + compile, batch {batch}"], _ = images_per_second(
                builder(pipeline, entry, batch), args.images, args.repeats, sync
            )

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run: sizes are not meaningful)"
    baseline = results[naive_label]
    print(
        f"device: {name}; {args.size} px, {args.steps} steps, strength {args.strength}, CFG; "
        f"{tflop:.1f} TFLOP/image; peak {args.peak_tflops} TFLOP/s"
    )
    print(f"{'variant':38} {'img/s':>8} {'x naive':>8} {'MFU':>6}")
    for label, rate in results.items():
        mfu = rate * tflop / args.peak_tflops
        print(f"{label:38} {rate:8.3f} {rate / baseline:8.2f} {mfu:6.1%}")


if __name__ == "__main__":
    main()
