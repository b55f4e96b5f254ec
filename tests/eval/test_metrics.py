"""Metrics against hand-computed cases and, where the definitions agree (no ties), scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from oripid.errors import OripidError
from oripid.eval.metrics import (
    aggregate_by_model,
    ap_from_negative_counts,
    average_precision,
    format_table,
    micro_average_precision,
    negative_counts,
    per_query_from_matrix,
    retrieval_metrics,
)


def test_tied_negative_ranks_ahead_of_the_positive():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    relevant = np.array([False, True, False, False])
    assert negative_counts(scores, relevant).tolist() == [2]
    assert average_precision(scores, relevant) == pytest.approx(1 / 3)
    m = retrieval_metrics([negative_counts(scores, relevant)], ks=(2, 3))
    assert m["acc@1"] == 0.0 and m["recall@2"] == 0.0 and m["recall@3"] == 1.0


def test_all_scores_equal_gives_the_worst_rank():
    scores = np.zeros(10)
    relevant = np.zeros(10, dtype=bool)
    relevant[0] = True
    assert average_precision(scores, relevant) == pytest.approx(1 / 10)


def test_one_positive_without_ties():
    assert average_precision(np.array([0.2, 0.8, 0.5]), np.array([False, False, True])) == pytest.approx(0.5)
    assert average_precision(np.array([0.2, 0.8, 0.5]), np.array([False, True, False])) == pytest.approx(1.0)


def test_several_positives():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    relevant = np.array([True, False, True, False, True])
    # ranks 1, 3, 5 -> precisions 1, 2/3, 3/5
    assert average_precision(scores, relevant) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    m = retrieval_metrics([negative_counts(scores, relevant)], ks=(1, 3))
    assert (
        m["acc@1"] == 1.0 and m["recall@1"] == pytest.approx(1 / 3) and m["recall@3"] == pytest.approx(2 / 3)
    )


def test_several_positives_tied_with_a_negative():
    scores = np.array([0.9, 0.7, 0.7, 0.7])
    relevant = np.array([False, True, True, False])
    # order: 0.9 neg, 0.7 neg, then the two positives at ranks 3 and 4 -> (1/3 + 2/4) / 2
    assert average_precision(scores, relevant) == pytest.approx(5 / 12)


def test_query_without_positive_counts_as_zero():
    assert ap_from_negative_counts([]) == 0.0
    m = retrieval_metrics([np.array([2]), np.array([], dtype=int)], ks=(1,))
    assert m["mAP"] == pytest.approx(1 / 6)
    assert m["n_queries"] == 2.0 and m["acc@1"] == 0.0


def test_empty_query_set_is_a_user_error():
    with pytest.raises(OripidError, match="no queries"):
        retrieval_metrics([])


@pytest.mark.parametrize("seed", range(5))
def test_ap_equals_sklearn_without_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.random((20, 300))
    relevant = rng.random((20, 300)) < 0.05
    relevant[:, 0] = True
    ours = [ap_from_negative_counts(c) for c in per_query_from_matrix(scores, relevant)]
    theirs = [average_precision_score(relevant[i], scores[i]) for i in range(20)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_micro_ap_hand_computed():
    q = np.array([0, 0, 1, 1])
    c = np.array([1, 2, 3, 4])
    s = np.array([0.9, 0.8, 0.85, 0.7])
    pos = np.array([True, False, False, True])
    # global order: T(0.9) F(0.85) F(0.8) T(0.7); three ground-truth pairs, one never predicted
    assert micro_average_precision(q, c, s, 3, pos) == pytest.approx((1 + 2 / 4) / 3)


def test_micro_ap_ties_against_and_duplicates_dropped():
    q = np.array([0, 1, 0])
    c = np.array([1, 2, 1])
    s = np.array([0.9, 0.9, 0.1])  # (0, 1) predicted twice: only 0.9 is kept
    pos = np.array([True, False, True])
    assert micro_average_precision(q, c, s, 1, pos) == pytest.approx(1 / 2)


def test_micro_ap_equals_sklearn_when_every_pair_is_predicted():
    rng = np.random.default_rng(3)
    n = 500
    q = rng.integers(0, 50, n)
    c = np.arange(n)
    s = rng.random(n)
    pos = rng.random(n) < 0.1
    ours = micro_average_precision(q, c, s, int(pos.sum()), pos)
    assert ours == pytest.approx(average_precision_score(pos, s), rel=1e-12)


def test_aggregate_seen_and_unseen_means():
    per_model = {
        "sdxl": {"mAP": 0.6, "acc@1": 0.5, "n_queries": 10.0},
        "sd2": {"mAP": 0.9, "acc@1": 0.8, "n_queries": 10.0},
        "kolors": {"mAP": 0.4, "acc@1": 0.3, "n_queries": 30.0},
    }
    rows = aggregate_by_model(per_model, seen_models=("sd2",))
    assert [r["model"] for r in rows][:3] == ["sd2", "kolors", "sdxl"]
    assert ["group" in r for r in rows] == [False, False, False, True, True]
    unseen = next(r for r in rows if r.get("group") == "unseen")
    assert unseen["mAP"] == pytest.approx(0.5) and unseen["n_queries"] == 40.0
    seen = next(r for r in rows if str(r["model"]).startswith("seen"))
    assert seen["acc@1"] == pytest.approx(0.8)
    table = format_table(rows)
    assert "| sd2 | 90.0 | 80.0 | 10 |" in table
