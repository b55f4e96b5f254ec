"""A planted linear origin-identification problem, for tests, benchmarks and demos without a GPU.

Origins are ``x ~ N(0, I_d)``. Model ``m`` turns an origin into a generation
``A_m x + c U z + noise`` with ``A_m = I + U B_m U^T``: a random per-model map that only acts inside a
shared r-dimensional "discrepancy" subspace ``U`` (``c U z`` is the prompt's content, also inside it).
Raw cosine fails when the discrepancy is large; a W that annihilates ``U`` matches every model,
seen or not, which is the structure the paper's theory argues VAE features have. A learned or
closed-form W should find it from the "sd2" training data alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PlantedData:
    """Training (generations + origins), gallery (test origins + distractors) and per-model queries."""

    train_features: np.ndarray
    train_labels: np.ndarray
    train_origin_features: np.ndarray
    train_origin_labels: np.ndarray
    gallery_features: np.ndarray
    gallery_labels: np.ndarray
    query_features: dict[str, np.ndarray] = field(default_factory=dict)
    query_labels: dict[str, np.ndarray] = field(default_factory=dict)
    discrepancy_basis: np.ndarray | None = None


def make_planted(
    *,
    dim: int = 256,
    n_train_origins: int = 1000,
    generations_per_origin: int = 4,
    n_test_origins: int = 200,
    n_distractors: int = 1800,
    models: tuple[str, ...] = ("sd2", "sdxl", "kolors"),
    train_model: str = "sd2",
    discrepancy_rank: int = 64,
    discrepancy_scale: float = 10.0,
    content_scale: float = 10.0,
    noise: float = 0.3,
    seed: int = 0,
) -> PlantedData:
    """Draw the planted problem; every array is float32, labels are int64 origin ids."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, discrepancy_rank)))
    maps = {
        m: discrepancy_scale
        * rng.standard_normal((discrepancy_rank, discrepancy_rank))
        / np.sqrt(discrepancy_rank)
        for m in models
    }

    def generate(model: str, origins: np.ndarray) -> np.ndarray:
        inside = (origins @ basis) @ maps[model].T + content_scale * rng.standard_normal(
            (len(origins), discrepancy_rank)
        )
        return origins + inside @ basis.T + noise * rng.standard_normal(origins.shape)

    train_origins = rng.standard_normal((n_train_origins, dim))
    train_ids = np.arange(n_train_origins, dtype=np.int64)
    rep = np.repeat(train_origins, generations_per_origin, axis=0)
    train = generate(train_model, rep)
    test_origins = rng.standard_normal((n_test_origins, dim))
    test_ids = np.arange(n_train_origins, n_train_origins + n_test_origins, dtype=np.int64)
    distractors = rng.standard_normal((n_distractors, dim))
    distractor_ids = -1 - np.arange(n_distractors, dtype=np.int64)  # ids no query has
    data = PlantedData(
        train_features=train.astype(np.float32),
        train_labels=np.repeat(train_ids, generations_per_origin),
        train_origin_features=train_origins.astype(np.float32),
        train_origin_labels=train_ids,
        gallery_features=np.concatenate([test_origins, distractors]).astype(np.float32),
        gallery_labels=np.concatenate([test_ids, distractor_ids]),
        discrepancy_basis=basis,
    )
    for m in models:
        data.query_features[m] = generate(m, test_origins).astype(np.float32)
        data.query_labels[m] = test_ids.copy()
    return data
