"""Features in, metrics table out: the reference linear-W evaluation that `oripid validate` reports.

All models' queries go through one blocked pass over the gallery (the gallery is read and projected
once), then the results are split per model and aggregated into seen / unseen means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from oripid.errors import OripidError
from oripid.eval.matcher import ArrayLike, match, positives_from_labels
from oripid.eval.metrics import aggregate_by_model, micro_average_precision, retrieval_metrics


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
    # 1. Check inputs.
    models = list(query_features)
    if not models:
        raise OripidError("no query features given: evaluate needs at least one model's queries")
    missing = [m for m in models if m not in query_origin_ids]
    if missing:
        raise OripidError(f"query origin ids missing for model(s) {missing}")
    sizes = []
    for m in models:
        n, n_ids = len(query_features[m]), len(query_origin_ids[m])
        if n != n_ids:
            raise OripidError(f"model {m!r}: {n} query features but {n_ids} origin ids")
        sizes.append(n)
    if len(gallery_features) != len(gallery_origin_ids):
        raise OripidError(
            f"gallery: {len(gallery_features)} features but {len(gallery_origin_ids)} origin ids"
        )

    # 2. One pass over the gallery for every model's queries.
    queries = np.concatenate([_as_numpy(query_features[m]) for m in models], axis=0)
    labels = np.concatenate([np.asarray(query_origin_ids[m]) for m in models], axis=0)
    positives = positives_from_labels(labels, np.asarray(gallery_origin_ids))
    k = max(max(ks), micro_ap_top)
    result = match(
        queries,
        gallery_features,
        k=k,
        positives=positives,
        weight=weight,
        device=device,
        query_block=query_block,
        gallery_block=gallery_block,
    )

    # 3. Split per model and aggregate.
    counts = result.negative_counts()
    hits = result.topk_is_positive()[:, :micro_ap_top]
    top_scores = result.scores[:, :micro_ap_top].numpy()
    top_idx = result.indices[:, :micro_ap_top].numpy()
    per_model: dict[str, dict[str, float]] = {}
    start = 0
    for m, n in zip(models, sizes, strict=True):
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
        per_model[m] = row
    return aggregate_by_model(per_model, seen_models=seen_models)


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
