"""evaluate_features: per-model rows match a brute-force computation; seen/unseen rows are means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oripid.errors import OripidError
from oripid.eval.metrics import average_precision
from oripid.eval.reference_eval import evaluate_features, evaluate_perturbations


def test_per_model_rows_equal_brute_force():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((300, 16)).astype(np.float32)
    gallery_ids = np.array([f"o{i}" for i in range(300)])
    queries, ids = {}, {}
    for m, noise in (("sd2", 0.5), ("sdxl", 1.0), ("kolors", 2.0)):
        pick = rng.choice(300, 40, replace=False)
        queries[m] = gallery[pick] + noise * rng.standard_normal((40, 16)).astype(np.float32)
        ids[m] = gallery_ids[pick]
    ids["kolors"][0] = "not-in-gallery"
    rows = evaluate_features(queries, ids, gallery, gallery_ids, gallery_block=64, query_block=16)
    by_model = {r["model"]: r for r in rows}
    g = torch.nn.functional.normalize(torch.as_tensor(gallery, dtype=torch.float64), dim=1)
    for m in queries:
        q = torch.nn.functional.normalize(torch.as_tensor(queries[m], dtype=torch.float64), dim=1)
        s = (q @ g.T).numpy()
        rel = ids[m][:, None] == gallery_ids[None, :]
        expect = np.mean([average_precision(s[i], rel[i]) for i in range(40)])
        assert by_model[m]["mAP"] == pytest.approx(expect, abs=1e-9)
        assert by_model[m]["acc@1"] == pytest.approx(np.mean(rel[np.arange(40), s.argmax(1)]))
        assert 0.0 <= by_model[m]["microAP"] <= 1.0
    unseen = by_model["unseen (mean of 2)"]
    assert unseen["mAP"] == pytest.approx((by_model["sdxl"]["mAP"] + by_model["kolors"]["mAP"]) / 2)
    assert by_model["sd2"]["mAP"] > by_model["kolors"]["mAP"]


def test_mismatched_inputs_are_user_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(OripidError, match="origin ids"):
        evaluate_features({"sd2": x}, {"sd2": np.arange(2)}, x, np.arange(3))
    with pytest.raises(OripidError, match="missing"):
        evaluate_features({"sd2": x}, {}, x, np.arange(3))


def test_perturbation_rows_keep_their_own_means():
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((200, 8)).astype(np.float32)
    ids = np.arange(200)
    clean = {m: gallery[:50] + 0.1 * rng.standard_normal((50, 8)).astype(np.float32) for m in ("sd2", "sdxl")}
    noisy = {m: x + 3.0 * rng.standard_normal(x.shape).astype(np.float32) for m, x in clean.items()}
    origin_ids = {"sd2": ids[:50], "sdxl": ids[:50]}
    rows = evaluate_perturbations({"none": clean, "blur_r4": noisy}, origin_ids, gallery, ids)
    assert [(r["perturbation"], r["model"]) for r in rows] == [
        ("none", "sd2"), ("none", "sdxl"), ("none", "seen (mean of 1)"), ("none", "unseen (mean of 1)"),
        ("blur_r4", "sd2"), ("blur_r4", "sdxl"), ("blur_r4", "seen (mean of 1)"), ("blur_r4", "unseen (mean of 1)"),
    ]  # fmt: skip
    clean_rows = evaluate_features(clean, origin_ids, gallery, ids)
    assert rows[0]["mAP"] == clean_rows[0]["mAP"] and rows[0]["mAP"] > rows[4]["mAP"]
