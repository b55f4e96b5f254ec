"""The validation report's figures: per-model mAP bars, true-origin rank histogram, contact sheets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def map_bar_chart(rows_by_w: dict[str, list[dict]], models: list[str], path: Path) -> Path:
    """Grouped bars: mAP per model for each W (identity baseline, learned)."""
    plt = _pyplot()
    width = 0.8 / len(rows_by_w)
    figure, axes = plt.subplots(figsize=(1.2 * len(models) + 2, 3.5))
    for i, (name, rows) in enumerate(rows_by_w.items()):
        values = {row["model"]: row["mAP"] for row in rows}
        axes.bar(np.arange(len(models)) + i * width, [100 * values[m] for m in models], width, label=name)
    axes.set_xticks(np.arange(len(models)) + width * (len(rows_by_w) - 1) / 2, models, rotation=30)
    axes.set_ylabel("mAP (%)")
    axes.set_ylim(0, 100)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def rank_histogram(ranks_by_model: dict[str, np.ndarray], path: Path) -> Path:
    """Where each query's true origin lands in its ranking (1 = retrieved first)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.5))
    top = max([int(r.max()) for r in ranks_by_model.values() if r.size] + [1])
    bins = np.arange(1, min(top, 50) + 2) - 0.5
    for model, ranks in ranks_by_model.items():
        axes.hist(np.clip(ranks, 1, bins[-1] - 0.5), bins=bins, histtype="step", label=model)
    axes.set_xlabel("rank of the true origin (clipped at 50)")
    axes.set_ylabel("queries")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def contact_sheet(rows: list[list[tuple[str, bytes | Image.Image]]], path: Path, cell: int = 128) -> Path:
    """A grid: each row is [(label, image), ...], e.g. an origin beside its generations."""
    columns = max(len(row) for row in rows)
    label_height = 14
    sheet = Image.new("RGB", (columns * cell, len(rows) * (cell + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (label, image) in enumerate(row):
            if isinstance(image, bytes):
                image = Image.open(io.BytesIO(image))
            thumb = image.convert("RGB").resize((cell, cell))
            top = r * (cell + label_height)
            sheet.paste(thumb, (c * cell, top + label_height))
            draw.text((c * cell + 2, top + 1), label[:20], fill="black")
    sheet.save(path)
    return path
