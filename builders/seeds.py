"""Every random choice of a build derives from the dataset seed by a keyed hash, never from order."""

from __future__ import annotations

import hashlib


def keyed_int(*parts: object, bits: int = 63) -> int:
    """A stable non-negative integer from the parts (sha256 of their `|`-joined text)."""
    text = "|".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << bits) - 1)


def sample_seed(dataset_seed: int, model: str, origin_id: str, prompt_idx: int) -> int:
    """seed = hash(dataset seed, model, origin_id, prompt_idx): one torch.Generator per image."""
    return keyed_int("sample", dataset_seed, model, origin_id, prompt_idx)


def choose_prompts(
    dataset_seed: int, model: str, origin_id: str, available: list[int], count: int
) -> list[int]:
    """`count` of an origin's prompt indices for one model, by a keyed shuffle (sorted result)."""
    ranked = sorted(available, key=lambda idx: keyed_int("prompt", dataset_seed, model, origin_id, idx))
    return sorted(ranked[:count])
