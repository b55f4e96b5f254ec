"""Exact cosine top-k matching in blocks, with the counts the metrics need, never a full score matrix.

A 1e4 x 1e6 float32 score matrix is 40 GB; the paper's setting (5,000 queries per model against a
large gallery) needs the same figures without it. The gallery is read once, block by block (it may
be a ``numpy.memmap`` on disk); each block is projected by W (optional), L2-normalised and scored
against every query block; a running top-k per query is merged with ``torch.topk``. In the same pass,
for each query's positives (gallery indices of its origin), the number of *other* gallery items
scoring ``>=`` the positive (minus ``tie_tol``) is counted: that is all that AP, accuracy and
recall@k need (see :mod:`oripid.eval.metrics`), and ties count against the query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from oripid.errors import OripidError

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class MatchResult:
    """Top-k neighbours of each query and, if positives were given, their pessimistic counts.

    ``scores``/``indices``: [Q, k] cosine similarities (descending) and gallery row indices.
    ``positives``: [Q, P] gallery indices of each query's positives, -1 padded (or None).
    ``positive_scores``: [Q, P] their cosine similarity (NaN where padded).
    ``negatives_ahead``: [Q, P] gallery items other than the query's positives scoring ``>=`` that
    positive (-1 where padded).
    """

    scores: torch.Tensor
    indices: torch.Tensor
    positives: np.ndarray | None = None
    positive_scores: torch.Tensor | None = None
    negatives_ahead: torch.Tensor | None = None

    def negative_counts(self) -> list[np.ndarray]:
        """Per query, the counts for its positives present in the gallery (input of ``retrieval_metrics``)."""
        if self.negatives_ahead is None or self.positives is None:
            raise ValueError("match() was called without positives; no counts to report")
        counts = self.negatives_ahead.numpy()
        return [row[valid] for row, valid in zip(counts, self.positives >= 0, strict=True)]

    def true_origin_rank(self) -> np.ndarray:
        """1-based pessimistic rank of each query's best positive (ties against it); 0 if it has none."""
        ranks = np.zeros(len(self.scores), dtype=np.int64)
        for q, counts in enumerate(self.negative_counts()):
            if counts.size:
                ranks[q] = 1 + int(counts.min())
        return ranks

    def topk_is_positive(self) -> np.ndarray:
        """[Q, k] bool: whether each retrieved item is one of the query's positives."""
        if self.positives is None:
            raise ValueError("match() was called without positives")
        idx = self.indices.numpy()
        pos = self.positives
        return (idx[:, :, None] == pos[:, None, :]).any(axis=-1) & (idx >= 0)


def positives_from_labels(query_labels: ArrayLike, gallery_labels: ArrayLike) -> np.ndarray:
    """[Q, P] gallery indices whose label equals each query's label, -1 padded (P >= 1).

    Labels are origin ids (ints or strings, the same kind on both sides). A query whose origin is
    not in the gallery gets a row of -1 (AP 0 in the metrics).
    """
    q = np.asarray(query_labels)
    g = np.asarray(gallery_labels)
    if q.ndim != 1 or g.ndim != 1:
        raise OripidError(f"origin labels must be 1-D, got query {q.shape} and gallery {g.shape}")
    if q.dtype.kind != g.dtype.kind and not (q.dtype.kind in "iu" and g.dtype.kind in "iu"):
        raise OripidError(
            f"query origin ids ({q.dtype}) and gallery origin ids ({g.dtype}) are of different kinds; "
            "use the same origin_id column type on both sides"
        )
    order = np.argsort(g, kind="stable")
    sorted_g = g[order]
    left = np.searchsorted(sorted_g, q, side="left")
    right = np.searchsorted(sorted_g, q, side="right")
    n = right - left
    width = max(int(n.max(initial=0)), 1)
    out = np.full((q.size, width), -1, dtype=np.int64)
    for p in range(width):
        has = n > p
        out[has, p] = order[left[has] + p]
    return out


def embed(
    features: ArrayLike, weight: torch.Tensor | None = None, *, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``normalize(x @ W.T)`` in float32 on ``device`` (W optional: identity)."""
    x = _to_tensor(features).to(device=device, dtype=torch.float32)
    if weight is not None:
        w = weight.to(device=device, dtype=torch.float32)
        if x.shape[-1] != w.shape[1]:
            raise OripidError(
                f"features have dimension {x.shape[-1]} but W is {tuple(w.shape)} ([out, in]); "
                "use the W trained on features of this kind"
            )
        x = x @ w.T
    return torch.nn.functional.normalize(x, dim=-1)


def match(
    queries: ArrayLike,
    gallery: ArrayLike,
    *,
    k: int = 10,
    positives: np.ndarray | None = None,
    weight: torch.Tensor | None = None,
    query_block: int = 2048,
    gallery_block: int = 32768,
    device: str | torch.device | None = None,
    tie_tol: float = 1e-6,
) -> MatchResult:
    """Exact cosine top-k of every query over the gallery, gallery streamed in blocks.

    ``queries`` [Q, D] and ``gallery`` [G, D] are raw features (tensor, array or memmap); ``weight``
    [out, D] is applied to both before normalising. ``positives`` [Q] or [Q, P] (gallery indices, -1
    padded) turns on the counting pass. ``tie_tol`` absorbs float32 rounding between separately
    computed scores of equal pairs: an item within ``tie_tol`` of a positive counts as tied (against).
    Peak memory is about ``query_block x gallery_block x 4`` bytes on ``device`` (twice that with
    positives: a comparison buffer).
    """
    # 1. Check inputs.
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_gallery = len(gallery)
    if n_gallery == 0:
        raise OripidError("the gallery is empty: nothing to match against")
    if k < 1:
        raise OripidError(f"k must be >= 1, got {k}")
    k = min(k, n_gallery)
    q_emb = embed(queries, weight, device=device)
    n_queries = q_emb.shape[0]
    if positives is not None:
        positives = np.asarray(positives, dtype=np.int64)
        positives = positives[:, None] if positives.ndim == 1 else positives
        if positives.shape[0] != n_queries:
            raise OripidError(f"positives has {positives.shape[0]} rows for {n_queries} queries")
        if positives.max(initial=-1) >= n_gallery:
            raise OripidError(f"a positive index is >= the gallery size {n_gallery}")

    # 2. Scores of the positives themselves (rows gathered once).
    pos_t = pos_scores = counts = None
    if positives is not None:
        valid = positives >= 0
        rows = np.unique(positives[valid])
        row_emb = embed(_take_rows(gallery, rows), weight, device=device)
        lookup = np.searchsorted(rows, np.where(valid, positives, rows[0] if rows.size else 0))
        pos_emb = row_emb[torch.as_tensor(lookup, device=device)] if rows.size else None
        pos_scores = torch.full(positives.shape, float("nan"), device=device)
        if pos_emb is not None:
            dots = (pos_emb * q_emb[:, None, :]).sum(-1)
            pos_scores = torch.where(torch.as_tensor(valid, device=device), dots, pos_scores)
        pos_t = torch.as_tensor(positives, device=device)
        counts = torch.zeros(positives.shape, dtype=torch.int64, device=device)

    # 3. One pass over the gallery: merge top-k, count items scoring >= each positive.
    scratch: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    best_s = torch.full((n_queries, k), -float("inf"), device=device)
    best_i = torch.full((n_queries, k), -1, dtype=torch.int64, device=device)
    for g0 in range(0, n_gallery, gallery_block):
        g1 = min(g0 + gallery_block, n_gallery)
        g_emb = embed(_take_slice(gallery, g0, g1), weight, device=device)
        for q0 in range(0, n_queries, query_block):
            q1 = min(q0 + query_block, n_queries)
            s = q_emb[q0:q1] @ g_emb.T
            kk = min(k, g1 - g0)
            bs, bi = torch.topk(s, kk, dim=1)
            merged_s = torch.cat([best_s[q0:q1], bs], dim=1)
            merged_i = torch.cat([best_i[q0:q1], bi + g0], dim=1)
            top_s, top_pos = torch.topk(merged_s, k, dim=1)
            best_s[q0:q1] = top_s
            best_i[q0:q1] = torch.gather(merged_i, 1, top_pos)
            if pos_t is not None:
                _count_block(s, pos_t[q0:q1], pos_scores[q0:q1], counts[q0:q1], g0, g1, tie_tol, scratch)

    # 4. Results on the CPU.
    result = MatchResult(scores=best_s.cpu(), indices=best_i.cpu())
    if positives is not None:
        result.positives = positives
        result.positive_scores = pos_scores.cpu()
        result.negatives_ahead = torch.where(pos_t >= 0, counts, torch.full_like(counts, -1)).cpu()
    return result


def _count_block(
    s: torch.Tensor,
    pos: torch.Tensor,
    pos_scores: torch.Tensor,
    counts: torch.Tensor,
    g0: int,
    g1: int,
    tie_tol: float,
    scratch: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Add to ``counts`` the items of this block, other than the query's positives, scoring >= each one.

    The comparison is written into a reused float buffer and summed by a matmul with a ones vector:
    about 10x faster on CPU than ``(s >= t).sum(1)``, which allocates a fresh bool matrix per block
    (counts stay exact: float32 holds integers up to 2^24, far above a block's width).
    """
    if s.shape not in scratch:
        scratch[s.shape] = (torch.empty_like(s), torch.ones(s.shape[1], 1, dtype=s.dtype, device=s.device))
    buffer, ones = scratch[s.shape]
    in_block = (pos >= g0) & (pos < g1)
    rows, cols = torch.nonzero(in_block, as_tuple=True)
    own = s[rows, pos[rows, cols] - g0]  # scores of the queries' own positives inside this block
    for p in range(pos.shape[1]):
        threshold = pos_scores[:, p] - tie_tol  # NaN (padding) counts nothing
        torch.ge(s, threshold.unsqueeze(1), out=buffer)
        counts[:, p] += (buffer @ ones).squeeze(1).round().to(counts.dtype)
        if rows.numel():  # a query's own positives are not negatives: take them back out
            hit = (own >= threshold[rows]).to(counts.dtype)
            counts.index_put_((rows, torch.full_like(rows, p)), -hit, accumulate=True)


def _to_tensor(array: ArrayLike) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    if not array.flags.writeable:  # a read-only memmap block: torch wants writable memory
        array = array.copy()
    return torch.from_numpy(array)


def _take_slice(array: ArrayLike, start: int, stop: int) -> ArrayLike:
    block = array[start:stop]
    return block if isinstance(block, torch.Tensor) else np.ascontiguousarray(block)


def _take_rows(array: ArrayLike, rows: np.ndarray) -> ArrayLike:
    if isinstance(array, torch.Tensor):
        return array[torch.as_tensor(rows, dtype=torch.int64)]
    return np.asarray(array[rows]) if rows.size else np.zeros((0, array.shape[1]), dtype=np.float32)
