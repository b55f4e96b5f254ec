"""The closed form recovers the planted relation, streaming from disk chunks, in float64 sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oripid.errors import OripidError
from oripid.eval.arrays import open_features
from oripid.eval.closed_form import ClosedFormConfig, ScatterAccumulator, fit_closed_form
from oripid.eval.reference_eval import evaluate_features


def _map(data, weight=None):
    rows = evaluate_features(
        data.query_features, data.query_labels, data.gallery_features, data.gallery_labels, weight=weight
    )
    return {r["model"]: r["mAP"] for r in rows}


def test_closed_form_from_disk_chunks_recovers_the_planted_relation(planted, tmp_path):
    chunks = tmp_path / "features"
    chunks.mkdir()
    for i, start in enumerate(range(0, len(planted.train_features), 3000)):
        np.save(chunks / f"part-{i:03d}.npy", planted.train_features[start : start + 3000])
    np.save(tmp_path / "origins.npy", planted.train_origin_features)
    features = open_features(chunks)
    assert features.shape == planted.train_features.shape
    result = fit_closed_form(
        features,
        planted.train_labels,
        config=ClosedFormConfig(out_dim=64, chunk_rows=1024),
        origin_features=open_features(tmp_path / "origins.npy"),
        origin_labels=planted.train_origin_labels,
    )
    assert result.rows == len(planted.train_features) + len(planted.train_origin_features)
    assert _map(planted)["sd2"] < 0.4
    after = _map(planted, result.weight)
    assert after["sd2"] >= 0.95 and after["unseen (mean of 2)"] >= 0.95, after
    # W annihilates the planted discrepancy subspace.
    basis = torch.as_tensor(planted.discrepancy_basis, dtype=torch.float32)
    assert (result.weight @ basis).norm() / result.weight.norm() < 0.05


def test_chunking_does_not_change_the_result(planted):
    x, y = planted.train_features[:3000], planted.train_labels[:3000]
    cfg = ClosedFormConfig(out_dim=16, include_origins=False)
    one = fit_closed_form(x, y, config=cfg.model_copy(update={"chunk_rows": 3000})).weight
    many = fit_closed_form(x, y, config=cfg.model_copy(update={"chunk_rows": 77})).weight
    # eigenvectors are defined up to sign
    signs = torch.sign((one * many).sum(1, keepdim=True))
    torch.testing.assert_close(one, many * signs, atol=1e-4, rtol=1e-3)


def test_scatter_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)) + 5.0  # a large mean: the shift must avoid cancellation
    cls = rng.integers(0, 10, 300)
    acc = ScatterAccumulator(6, 10)
    for s in range(0, 300, 50):
        acc.update(x[s : s + 50], cls[s : s + 50])
    means = np.stack([x[cls == c].mean(0) for c in range(10)])
    within = sum((x[cls == c] - means[c]).T @ (x[cls == c] - means[c]) for c in range(10))
    sums, counts = acc.class_sums.numpy(), acc.class_counts.numpy()
    between_raw = (sums / np.sqrt(counts)[:, None]).T @ (sums / np.sqrt(counts)[:, None])
    np.testing.assert_allclose(acc.scatter.numpy() - between_raw, within, rtol=1e-9, atol=1e-9)


def test_mean_direction_is_removed():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 8)) + 3.0
    y = np.repeat(np.arange(100), 4)
    w = fit_closed_form(x, y, config=ClosedFormConfig(out_dim=4, include_origins=False)).weight
    assert torch.abs(w @ torch.as_tensor(x.mean(0), dtype=torch.float32)).max() < 1e-4


def test_user_errors():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(OripidError, match="one origin id per row"):
        fit_closed_form(x, np.zeros(9), config=ClosedFormConfig(include_origins=False))
    with pytest.raises(OripidError, match="include_origins"):
        fit_closed_form(x, np.arange(10))
    with pytest.raises(OripidError, match="exceeds the feature dimension"):
        fit_closed_form(x, np.arange(10) % 3, config=ClosedFormConfig(include_origins=False))
