"""The blocked matcher against a brute-force full score matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oripid.errors import OripidError
from oripid.eval.matcher import match, positives_from_labels
from oripid.eval.metrics import negative_counts, retrieval_metrics


def _brute(queries, gallery, weight=None):
    q = torch.as_tensor(queries, dtype=torch.float64)
    g = torch.as_tensor(gallery, dtype=torch.float64)
    if weight is not None:
        q, g = q @ weight.double().T, g @ weight.double().T
    q = torch.nn.functional.normalize(q, dim=1)
    g = torch.nn.functional.normalize(g, dim=1)
    return (q @ g.T).numpy()


@pytest.mark.parametrize("use_weight", [False, True])
def test_topk_and_counts_equal_brute_force(use_weight):
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((1000, 32)).astype(np.float32)
    labels = rng.integers(0, 400, 1000)  # several positives per origin
    query_labels = np.concatenate([labels[:40], [10_000, 10_001]])  # two queries with no origin
    queries = (gallery[: len(query_labels)] + 0.8 * rng.standard_normal((len(query_labels), 32))).astype(
        np.float32
    )
    weight = torch.as_tensor(rng.standard_normal((16, 32)), dtype=torch.float32) if use_weight else None
    positives = positives_from_labels(query_labels, labels)

    res = match(queries, gallery, k=7, positives=positives, weight=weight, query_block=9, gallery_block=64)

    full = _brute(queries, gallery, weight)
    expect_idx = np.argsort(-full, axis=1)[:, :7]
    np.testing.assert_array_equal(res.indices.numpy(), expect_idx)
    np.testing.assert_allclose(res.scores.numpy(), np.take_along_axis(full, expect_idx, 1), atol=1e-5)
    relevant = labels[None, :] == query_labels[:, None]
    expect_counts = [np.sort(negative_counts(full[i], relevant[i])) for i in range(len(queries))]
    got_counts = [np.sort(c) for c in res.negative_counts()]
    for got, want in zip(got_counts, expect_counts, strict=True):
        np.testing.assert_array_equal(got, want)
    assert retrieval_metrics(got_counts) == retrieval_metrics(expect_counts)
    ranks = res.true_origin_rank()
    assert ranks[-1] == 0 and ranks[-2] == 0
    assert ranks[0] == 1 + min(expect_counts[0])


def test_duplicate_of_the_origin_counts_against_the_query():
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((50, 8)).astype(np.float32)
    gallery[30] = gallery[3]  # a distractor identical to the origin: an exact tie
    queries = gallery[3:4] + 0.01
    res = match(queries, gallery, k=3, positives=np.array([3]), gallery_block=16, query_block=1)
    assert res.negatives_ahead.tolist() == [[1]]
    assert res.true_origin_rank().tolist() == [2]


def test_positives_from_labels_pads_and_handles_strings():
    pos = positives_from_labels(np.array(["b", "z", "a"]), np.array(["a", "b", "a", "c"]))
    assert pos.tolist() == [[1, -1], [-1, -1], [0, 2]]
    with pytest.raises(OripidError, match="different kinds"):
        positives_from_labels(np.array([1, 2]), np.array(["a", "b"]))


def test_memmap_gallery_and_dimension_mismatch(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "g.npy"
    np.save(path, rng.standard_normal((100, 8)).astype(np.float32))
    gallery = np.load(path, mmap_mode="r")
    res = match(np.asarray(gallery[:5]), gallery, k=1, gallery_block=33)
    assert res.indices[:, 0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(OripidError, match="dimension"):
        match(np.zeros((2, 8), np.float32), gallery, weight=torch.zeros(4, 6))
