"""Features in, metrics table out: the reference linear-W evaluation that `oripid validate` reports.

Every query set (each model's queries, and optionally each perturbed copy of them) goes through one
blocked pass over the gallery, so the gallery is read and projected once; the results are then split
per set and aggregated into seen / unseen means, per perturbation when there are perturbations.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch

from oripid.errors import OripidError
from oripid.eval.matcher import ArrayLike, match, positives_from_labels
from oripid.eval.metrics import aggregate_by_model, micro_average_precision, retrieval_metrics

CLEAN = "none"  # the perturbation name of unperturbed queries in evaluate_perturbations' rows


def evaluate_features(
    query_features: Mapping[str, ArrayLike],
    query_origin_ids: Mapping[str, ArrayLike],
    gallery_features: ArrayLike,
    gallery_origin_ids: ArrayLike,
    *,
    weight: torch.Tensor | None = None,
    seen_models: Sequence[str] = ("sd2",),
    ks: Sequence[int] = (1, 5, 10),
    micro_ap_top: int = 10,
    device: str | torch.device | None = None,
    query_block: int = 2048,
    gallery_block: int = 32768,
) -> list[dict[str, float | str]]:
    """Per-model mAP, acc@1, recall@k and micro-AP, plus seen/unseen mean rows.

    ``query_features[model]`` [Q_m, D] and ``query_origin_ids[model]`` [Q_m] are each model's queries and
    their true origins; ``gallery_features`` [G, D] with ``gallery_origin_ids`` [G] is the reference set
    (origins + distractors; distractors carry ids no query has). ``weight`` [out, D] is W (None:
    identity, i.e. raw-feature cosine). ``micro_ap_top``: predictions kept per query for micro-AP.
    Returns rows for :func:`oripid.eval.metrics.format_table`; values are fractions.
    """
    sets = {m: (query_features[m], query_origin_ids.get(m)) for m in query_features}
    per_model = _metrics_per_set(
        sets, gallery_features, gallery_origin_ids, weight=weight, ks=ks, micro_ap_top=micro_ap_top,
        device=device, query_block=query_block, gallery_block=gallery_block,
    )  # fmt: skip
    return aggregate_by_model(per_model, seen_models=seen_models)


def evaluate_perturbations(
    perturbed_query_features: Mapping[str, Mapping[str, ArrayLike]],
    query_origin_ids: Mapping[str, ArrayLike],
    gallery_features: ArrayLike,
    gallery_origin_ids: ArrayLike,
    *,
    weight: torch.Tensor | None = None,
    seen_models: Sequence[str] = ("sd2",),
    ks: Sequence[int] = (1, 5, 10),
    micro_ap_top: int = 10,
    device: str | torch.device | None = None,
    query_block: int = 2048,
    gallery_block: int = 32768,
) -> list[dict[str, float | str]]:
    """Robustness rows: ``perturbed_query_features[perturbation][model]`` are the features of that
    model's queries after the perturbation (names from :mod:`oripid.eval.robustness`; use
    ``"none"`` for the clean queries). Rows carry a ``perturbation`` column; seen/unseen means are
    taken within each perturbation, so perturbed rows never mix into the clean averages.
    """
    sets = {
        (p, m): (features, query_origin_ids.get(m))
        for p, by_model in perturbed_query_features.items()
        for m, features in by_model.items()
    }
    per_set = _metrics_per_set(
        sets, gallery_features, gallery_origin_ids, weight=weight, ks=ks, micro_ap_top=micro_ap_top,
        device=device, query_block=query_block, gallery_block=gallery_block,
    )  # fmt: skip
    rows: list[dict[str, float | str]] = []
    for p in perturbed_query_features:
        per_model = {m: row for (pp, m), row in per_set.items() if pp == p}
        rows += [{"perturbation": p, **row} for row in aggregate_by_model(per_model, seen_models)]
    return rows


def _metrics_per_set(
    sets: Mapping[Hashable, tuple[ArrayLike, ArrayLike | None]],
    gallery_features: ArrayLike,
    gallery_origin_ids: ArrayLike,
    *,
    weight: torch.Tensor | None,
    ks: Sequence[int],
    micro_ap_top: int,
    device: str | torch.device | None,
    query_block: int,
    gallery_block: int,
) -> dict[Hashable, dict[str, float]]:
    # 1. Check inputs.
    if not sets:
        raise OripidError("no query features given: evaluation needs at least one model's queries")
    sizes = []
    for key, (features, ids) in sets.items():
        if ids is None:
            raise OripidError(f"query origin ids missing for {key!r}")
        if len(features) != len(ids):
            raise OripidError(f"{key!r}: {len(features)} query features but {len(ids)} origin ids")
        sizes.append(len(features))
    if len(gallery_features) != len(gallery_origin_ids):
        raise OripidError(
            f"gallery: {len(gallery_features)} features but {len(gallery_origin_ids)} origin ids"
        )

    # 2. One pass over the gallery for every query set.
    queries = np.concatenate([_as_numpy(f) for f, _ in sets.values()], axis=0)
    labels = np.concatenate([np.asarray(ids) for _, ids in sets.values()], axis=0)
    positives = positives_from_labels(labels, np.asarray(gallery_origin_ids))
    result = match(
        queries, gallery_features, k=max(max(ks), micro_ap_top), positives=positives, weight=weight,
        device=device, query_block=query_block, gallery_block=gallery_block,
    )  # fmt: skip

    # 3. Split per set.
    counts = result.negative_counts()
    hits = result.topk_is_positive()[:, :micro_ap_top]
    top_scores = result.scores[:, :micro_ap_top].numpy()
    top_idx = result.indices[:, :micro_ap_top].numpy()
    out: dict[Hashable, dict[str, float]] = {}
    start = 0
    for key, n in zip(sets, sizes, strict=True):
        sl = slice(start, start + n)
        start += n
        row = retrieval_metrics(counts[sl], ks=ks)
        n_gt = int((positives[sl] >= 0).sum())
        qid = np.repeat(np.arange(n), top_idx.shape[1])
        row["microAP"] = (
            micro_average_precision(qid, top_idx[sl].ravel(), top_scores[sl].ravel(), n_gt, hits[sl].ravel())
            if n_gt
            else 0.0
        )
        out[key] = row
    return out


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
