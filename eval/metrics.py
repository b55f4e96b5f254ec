"""Retrieval metrics for origin identification, with one pessimistic rule for ties.

Definitions (all scores: higher = more similar):

- **Ranking with ties counted against the query.** Gallery items are sorted by score, descending;
  among items with equal score the non-relevant ones come first. A positive tied with a negative
  therefore ranks *behind* it. This makes the figures independent of sort stability and removes the
  reward a degenerate model (all scores equal) would otherwise get.
- **AP of one query** = mean over its positives of precision at that positive's rank. If the j-th
  positive (by score, descending) has ``n_j`` negatives scoring ``>=`` it, its rank is ``j + n_j`` and
  its precision ``j / (j + n_j)``. Only positives present in the gallery count; a query with **no**
  positive in the gallery has AP 0 and is still counted in the mean.
- **mAP** = mean of per-query AP over all queries.
- **top-1 accuracy** = fraction of queries whose first ranked item is a positive (no negative scores
  ``>=`` the best positive).
- **recall@k** = mean over queries of (positives ranked within the top k) / (positives of the query);
  0 for a query with no positive. With one positive per query (ID²) this is the hit rate at k.
- **micro-AP** (the DISC21 challenge metric): pool every (query, candidate, score) prediction,
  rank them globally by score (ties: negatives first), and compute AP as the sum over the ranked list
  of precision x recall increment, where recall divides by the *total* number of ground-truth pairs,
  including pairs never predicted. Duplicate (query, candidate) predictions keep the highest score.

Everything here works on counts (negatives scoring ``>=`` each positive), so the figures for a 1e6
gallery can come from the blocked pass in :mod:`oripid.eval.matcher` without a full score matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from oripid.errors import OripidError


def ap_from_negative_counts(negatives_ahead: Sequence[int] | np.ndarray) -> float:
    """AP of one query from, for each positive, the number of negatives scoring ``>=`` it.

    The counts may come in any order: they are sorted ascending, which is the order of the positives
    by descending score (a higher-scoring positive cannot have more negatives ahead of it). An empty
    sequence (no positive in the gallery) gives 0.
    """
    counts = np.sort(np.asarray(negatives_ahead, dtype=np.float64).ravel())
    if counts.size == 0:
        return 0.0
    j = np.arange(1, counts.size + 1, dtype=np.float64)
    return float(np.mean(j / (j + counts)))


def negative_counts(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """For one query's full score row: negatives scoring ``>=`` each positive (ties counted against)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    relevant = np.asarray(relevant, dtype=bool).ravel()
    if scores.shape != relevant.shape:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} differ in shape")
    negatives = np.sort(scores[~relevant])
    positives = scores[relevant]
    # negatives >= s  ==  total negatives - negatives < s
    return negatives.size - np.searchsorted(negatives, positives, side="left")


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of one query given its score for every gallery item and which items are positives."""
    return ap_from_negative_counts(negative_counts(scores, relevant))


def per_query_from_matrix(scores: np.ndarray, relevant: np.ndarray) -> list[np.ndarray]:
    """Negative counts per positive for each row of a full [Q, G] score matrix (small galleries)."""
    scores = np.asarray(scores)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"need matching 2-D scores and relevant, got {scores.shape} and {relevant.shape}")
    return [negative_counts(scores[i], relevant[i]) for i in range(scores.shape[0])]


def retrieval_metrics(
    negatives_ahead: Iterable[Sequence[int] | np.ndarray], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """mAP, top-1 accuracy and recall@k from per-query negative counts (see the module definitions).

    ``negatives_ahead[q]`` lists, for each positive of query ``q`` present in the gallery, how many
    negatives score ``>=`` it; an empty entry is a query without positive (AP 0, counted).
    Values are fractions in [0, 1]; ``n_queries`` is included so that means can be re-weighted.
    """
    aps: list[float] = []
    top1: list[float] = []
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    for counts in negatives_ahead:
        counts = np.sort(np.asarray(counts, dtype=np.int64).ravel())
        aps.append(ap_from_negative_counts(counts))
        if counts.size == 0:
            top1.append(0.0)
            for k in ks:
                recalls[k].append(0.0)
            continue
        ranks = np.arange(1, counts.size + 1) + counts  # pessimistic rank of each positive
        top1.append(1.0 if ranks[0] == 1 else 0.0)
        for k in ks:
            recalls[k].append(float(np.count_nonzero(ranks <= k)) / counts.size)
    if not aps:
        raise OripidError("no queries to evaluate: the query feature set is empty")
    out = {"mAP": float(np.mean(aps)), "acc@1": float(np.mean(top1))}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(recalls[k]))
    out["n_queries"] = float(len(aps))
    return out


def micro_average_precision(
    query_ids: np.ndarray,
    candidate_ids: np.ndarray,
    scores: np.ndarray,
    n_ground_truth: int,
    is_positive: np.ndarray,
) -> float:
    """DISC21 micro-AP over pooled predictions.

    ``query_ids``, ``candidate_ids``, ``scores`` and ``is_positive`` are parallel 1-D arrays, one entry
    per prediction (typically each query's top-k from :func:`oripid.eval.matcher.topk_cosine`);
    ``n_ground_truth`` is the total number of ground-truth (query, origin) pairs, predicted or not.
    """
    query_ids = np.asarray(query_ids).ravel()
    candidate_ids = np.asarray(candidate_ids).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_positive = np.asarray(is_positive, dtype=bool).ravel()
    n = scores.size
    if not (query_ids.size == candidate_ids.size == is_positive.size == n):
        raise ValueError("query_ids, candidate_ids, scores and is_positive must have the same length")
    if n_ground_truth <= 0:
        raise OripidError("micro-AP needs at least one ground-truth pair; none of the queries has an origin")
    if n == 0:
        return 0.0
    # 1. Deduplicate (query, candidate), keeping the highest score (DISC21 keeps one per pair).
    order = np.lexsort((-scores, candidate_ids, query_ids))
    q, c = query_ids[order], candidate_ids[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (q[1:] != q[:-1]) | (c[1:] != c[:-1])
    keep = order[first]
    scores, is_positive = scores[keep], is_positive[keep]
    # 2. Global ranking: score descending, negatives before positives on ties (counted against).
    order = np.lexsort((is_positive, -scores))
    tp = np.cumsum(is_positive[order])
    precision = tp / np.arange(1, tp.size + 1)
    recall_step = is_positive[order] / float(n_ground_truth)
    return float(np.sum(precision * recall_step))


def aggregate_by_model(
    per_model: Mapping[str, Mapping[str, float]], seen_models: Sequence[str] = ("sd2",)
) -> list[dict[str, float | str]]:
    """One row per model (seen models first), then ``seen`` and ``unseen`` rows (unweighted means).

    Model rows are ``{"model": name, **metrics}``; mean rows also carry ``"group": "seen" | "unseen"``,
    which is how a caller tells them apart. The paper reports seen (SD2, the training model) and unseen
    (all others) averages; a mean over models, not queries, keeps one large query set from
    dominating. ``n_queries`` of a mean row is the sum. A group with no model is omitted.
    """
    models = sorted(per_model, key=lambda m: (m not in seen_models, m))
    rows: list[dict[str, float | str]] = [{"model": m, **per_model[m]} for m in models]
    for group in ("seen", "unseen"):
        members = [per_model[m] for m in models if (m in seen_models) == (group == "seen")]
        if not members:
            continue
        keys = [k for k in members[0] if k != "n_queries"]
        mean = {k: float(np.mean([float(r[k]) for r in members])) for k in keys}
        if all("n_queries" in r for r in members):
            mean["n_queries"] = float(sum(float(r["n_queries"]) for r in members))
        rows.append({"model": f"{group} (mean of {len(members)})", "group": group, **mean})
    return rows


def format_table(rows: Sequence[Mapping[str, float | str]], percent: bool = True) -> str:
    """A Markdown table of metric rows (values as percentages, as the paper prints them)."""
    if not rows:
        return ""
    keys = [k for k in rows[0] if k not in ("model", "group")]
    lines = ["| model | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k, "")
            if isinstance(v, float) and k != "n_queries":
                cells.append(f"{100 * v:.1f}" if percent else f"{v:.4f}")
            else:
                cells.append(str(int(v)) if isinstance(v, float) else str(v))
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
