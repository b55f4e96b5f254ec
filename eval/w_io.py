"""Saving and loading the linear map W ([out, in], features = x @ W.T).

oripid writes safetensors ``{"weight": [out, in]}`` with string metadata (how it was fitted, the
config, the input/output sizes). Loading also takes what the public ID2 code and other tools hand
around: a safetensors file holding one tensor under any key, or a torch ``.pt``/``.pth`` file holding
a state dict with ``weight`` (or a single tensor entry) or a bare tensor. A matrix that looks
transposed is refused with a message rather than silently transposed: a wrong W gives plausible but
meaningless figures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from oripid import __version__
from oripid.errors import OripidError

FORMAT = "oripid-linear-w"


@dataclass
class LinearW:
    """W as a float32 [out, in] tensor plus the metadata it was saved with (empty for foreign files)."""

    weight: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])


def save_w(path: str | Path, weight: torch.Tensor, metadata: Mapping[str, object] | None = None) -> Path:
    """Write W as safetensors; non-string metadata values are stored as JSON."""
    if weight.ndim != 2:
        raise ValueError(f"W must be 2-D [out, in], got shape {tuple(weight.shape)}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise OripidError(f"{path}: W is written as safetensors; give a path ending in .safetensors")
    meta = {"format": FORMAT, "oripid_version": __version__}
    meta.update({"in_dim": str(weight.shape[1]), "out_dim": str(weight.shape[0])})
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({"weight": weight.detach().to("cpu", torch.float32).contiguous()}, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_w(path: str | Path, expected_in_dim: int | None = None) -> LinearW:
    """Read W from oripid's safetensors or the public layouts (see the module docstring).

    ``expected_in_dim`` (the feature dimension, 4096 for SD2 VAE latents) makes a transposed matrix
    an error that says so.
    """
    path = Path(path)
    if not path.is_file():
        raise OripidError(f"{path}: no such W file; train one with `oripid train-w` or give the right path")
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise OripidError(f"{path}: not a readable safetensors file ({exc})") from exc
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    elif path.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a bad pickle
            raise OripidError(f"{path}: not a readable torch file ({exc})") from exc
        tensors = {"weight": obj} if isinstance(obj, torch.Tensor) else obj
        if not isinstance(tensors, Mapping):
            raise OripidError(f"{path}: holds a {type(obj).__name__}, expected a tensor or a state dict")
    else:
        raise OripidError(f"{path}: unknown W format; use .safetensors, .pt or .pth")
    weight = _pick_weight(path, tensors)
    if weight.ndim != 2:
        raise OripidError(f"{path}: W must be 2-D [out, in], found shape {tuple(weight.shape)}")
    if expected_in_dim is not None and weight.shape[1] != expected_in_dim:
        hint = " (it looks transposed: save it as [out, in])" if weight.shape[0] == expected_in_dim else ""
        raise OripidError(
            f"{path}: W has shape {tuple(weight.shape)} but the features have dimension "
            f"{expected_in_dim}; expected [out, {expected_in_dim}]{hint}"
        )
    return LinearW(weight=weight.detach().to(torch.float32).contiguous(), metadata=metadata)


def _pick_weight(path: Path, tensors: Mapping[str, object]) -> torch.Tensor:
    tensor_items = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    if "weight" in tensor_items:
        return tensor_items["weight"]
    if len(tensor_items) == 1:
        return next(iter(tensor_items.values()))
    raise OripidError(
        f"{path}: cannot tell which tensor is W (keys: {sorted(tensor_items)}); "
        "save it under the key 'weight' or as the only tensor"
    )
