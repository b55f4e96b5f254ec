"""`oripid plan --estimate`: FLOPs counted on the full-size architectures on the meta device."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from oripid.builders.estimate import flops_per_image
from oripid.models_registry.registry import load_registry
from tests.builders.workspace import make_workspace

REPO = Path(__file__).resolve().parents[2]


def test_sd2_flops_match_the_known_figure():
    # SD2 at 512 px, 50 steps, strength 0.75, classifier-free guidance: about 63 TFLOP per image.
    entry = load_registry().get("sd2")
    assert flops_per_image(entry, 512, 50, 0.75) / 1e12 == pytest.approx(63, rel=0.03)
    # Fewer denoising steps cost proportionally less; the VAE part stays.
    assert flops_per_image(entry, 512, 50, 0.4) < 0.6 * flops_per_image(entry, 512, 50, 0.75)


def test_plan_estimate_prints_gpu_hours_per_model(tmp_path):
    workdir = make_workspace(tmp_path / "w")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "oripid",
            "plan",
            "--workdir",
            str(workdir),
            "--estimate",
            "--utilization",
            "0.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {tuple(line.split()[:2]): line.split() for line in result.stdout.splitlines()[1:]}
    header = result.stdout.splitlines()[1].split()
    assert header == ["split", "model", "images", "storage_GB", "TFLOP/img", "GPU_hours"]
    train = lines[("train", "sd2")]
    assert int(train[2]) == 4 and float(train[4]) > 0
    assert ("query", "sdxl") in lines and ("gallery", "origin") in lines


def test_estimate_reads_workspace_models_and_marks_unknown_denoisers(tmp_path):
    workdir = make_workspace(
        tmp_path / "w",
        config={
            "generate": {
                "train": {"models": ["sd2"], "prompts_per_origin": 2},
                "query": {"models": ["sd2", "odd"], "prompts_per_origin": 1},
            },
            "models": {"odd": {"num_inference_steps": 2}},
        },
    )
    (workdir / "models").mkdir()
    # A model whose denoiser the estimate has no input recipe for: reported, not a crash.
    (workdir / "models" / "odd.yaml").write_text(
        "extends: sd2\nkey: odd\narchitecture:\n  unet: {library: diffusers, class_name: UNet2DModel, config: {}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "oripid", "plan", "--workdir", str(workdir), "--estimate"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {tuple(line.split()[:2]): line.split() for line in result.stdout.splitlines()[2:]}
    assert rows[("query", "odd")][4:] == ["n/a", "n/a"]
    assert float(rows[("query", "sd2")][4]) > 0
    assert "no input recipe for UNet2DModel" in result.stderr


def test_guidance_distilled_models_count_one_denoiser_pass():
    entry = load_registry().get("sd2")
    with_cfg = flops_per_image(entry, 512, 50, 1.0, guidance_scale=7.5)
    without = flops_per_image(entry.model_copy(update={"classifier_free_guidance": False}), 512, 50, 1.0)
    assert without == pytest.approx(with_cfg / 2, rel=0.05)
