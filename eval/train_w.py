"""The reference linear-W trainer: the public ID2 recipe, every value a config field.

Recipe (defaults): ``Linear(D -> 512, bias=False)`` on VAE features, CosFace (s=64, m=0.35) over one
class per training origin with an L2-normalised class-weight matrix, Adam lr 3.5e-4 without weight
decay, 25 epochs x 2000 iterations, LR warm-up from 0.01x over epochs 0-4, flat 5-9, cosine decay
10-24, PK batches of 128 origins x 4 instances, EMA of W with decay 0.9999 (the EMA W is the result),
TF32 matmuls on GPU. Accelerate runs it on the CPU, one GPU or several (each process draws
``P / world_size`` origins per step; DDP averages the gradients, so the global batch is P x K).

Where the public sources say nothing the default is documented, not hidden:

- ``include_origins`` (default True): the origin image's own feature is one more instance of its class.
  The gallery holds origins and queries are generations, so this trains exactly the pairing that is
  matched (the public training folder holds ``T000000.jpg`` beside ``T000000_1.jpg``; whether the
  released run used it is not stated). Set False to train on generations alone.
- ``min_lr_factor`` (default 0): where the cosine ends, as a fraction of ``lr``.
- ``schedule_step`` (default "iteration"): the factor moves every iteration (fractional epochs) or
  only at epoch boundaries ("epoch").
- Seeded: on the CPU two runs with the same seed give bitwise-equal W; on GPUs cuBLAS and TF32 make
  runs close, not bitwise equal.
- Class weights are initialised N(0, 0.01^2) (normalised before use, so only the direction matters);
  W starts from ``torch.nn.Linear``'s default initialisation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from oripid.errors import OripidError, validated

logger = logging.getLogger(__name__)


class TrainWConfig(BaseModel):
    """Every setting of the trainer; defaults are the public recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out_dim: int = Field(512, gt=0, description="rows of W (the paper: 512; 64 loses accuracy)")
    scale: float = Field(64.0, gt=0, description="CosFace s")
    margin: float = Field(0.35, ge=0, description="CosFace m")
    lr: float = Field(3.5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = Field(25, gt=0)
    iters_per_epoch: int = Field(2000, gt=0)
    warmup_epochs: int = Field(5, ge=0)
    warmup_start_factor: float = Field(0.01, gt=0, le=1)
    flat_epochs: int = Field(5, ge=0)
    min_lr_factor: float = Field(0.0, ge=0, le=1)
    schedule_step: Literal["iteration", "epoch"] = "iteration"
    p_origins: int = Field(128, gt=0, description="origins per global batch (P)")
    k_instances: int = Field(4, gt=0, description="instances per origin (K)")
    ema_decay: float = Field(0.9999, ge=0, lt=1)
    include_origins: bool = True
    tf32: bool = True
    seed: int = 0
    log_every: int = Field(100, gt=0)

    @model_validator(mode="after")
    def _phases_fit(self) -> TrainWConfig:
        if self.warmup_epochs + self.flat_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) + flat_epochs ({self.flat_epochs}) exceed "
                f"epochs ({self.epochs})"
            )
        return self

    @property
    def total_iters(self) -> int:
        return self.epochs * self.iters_per_epoch


def load_train_config(path: str | Path | None = None, **overrides: object) -> TrainWConfig:
    """The config from a YAML mapping (optional) with keyword overrides; bad fields name themselves."""
    values: dict[str, object] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise OripidError(f"{path}: cannot read the trainer config ({exc})") from exc
        if not isinstance(loaded, Mapping):
            raise OripidError(f"{path}: the trainer config must be a mapping of field: value")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return validated(
        TrainWConfig, values, f"{path}: trainer config" if path is not None else "trainer config"
    )


def lr_factor(step: int, config: TrainWConfig) -> float:
    """LR multiplier at iteration ``step``: linear warm-up, flat, then cosine to ``min_lr_factor``."""
    epoch = step / config.iters_per_epoch
    if config.schedule_step == "epoch":
        epoch = math.floor(epoch)
    w, f = config.warmup_epochs, config.flat_epochs
    if epoch < w:
        return config.warmup_start_factor + (1 - config.warmup_start_factor) * epoch / w
    if epoch < w + f:
        return 1.0
    decay_epochs = config.epochs - w - f
    t = min((epoch - w - f) / decay_epochs, 1.0) if decay_epochs > 0 else 1.0
    return config.min_lr_factor + (1 - config.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))


class CosFace(torch.nn.Module):
    """Large-margin cosine loss: logits s * (cos - m * onehot) over normalised class weights."""

    def __init__(self, dim: int, n_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = (
            torch.nn.functional.normalize(embeddings, dim=1)
            @ torch.nn.functional.normalize(self.weight, dim=1).T
        )
        margin = torch.zeros_like(cos).scatter_(1, labels[:, None], self.margin)
        return torch.nn.functional.cross_entropy(self.scale * (cos - margin), labels)


class _Model(torch.nn.Module):
    def __init__(self, in_dim: int, out_dim: int, n_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(in_dim, out_dim, bias=False)
        self.head = CosFace(out_dim, n_classes, scale, margin)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.linear(x), labels)


class PKSampler:
    """Draws P classes (without replacement) and K instances of each (without replacement when the
    class has at least K, with replacement otherwise); seeded, vectorised over the P classes."""

    def __init__(self, class_of_instance: np.ndarray, p: int, k: int, seed: int) -> None:
        n_classes = int(class_of_instance.max()) + 1
        if p > n_classes:
            raise OripidError(f"p_origins={p} exceeds the {n_classes} training origins; lower p_origins")
        order = np.argsort(class_of_instance, kind="stable")
        counts = np.bincount(class_of_instance, minlength=n_classes)
        self.order = torch.as_tensor(order)
        self.starts = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]))
        self.counts = torch.as_tensor(counts)
        self.max_count = int(counts.max())
        self.n_classes, self.p, self.k = n_classes, p, k
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Instance indices [P*K] and their class indices [P*K]."""
        classes = torch.randperm(self.n_classes, generator=self.generator)[: self.p]
        n = self.counts[classes]
        keys = torch.rand(self.p, self.max_count, generator=self.generator)
        keys[torch.arange(self.max_count)[None, :] >= n[:, None]] = 2.0  # invalid slots sort last
        if self.max_count >= self.k:
            slots = torch.argsort(keys, dim=1)[:, : self.k]
        else:  # every class is smaller than K: all draws are with replacement below
            slots = torch.zeros(self.p, self.k, dtype=torch.int64)
        with_replacement = torch.floor(
            torch.rand(self.p, self.k, generator=self.generator) * n[:, None]
        ).long()
        slots = torch.where((n >= self.k)[:, None], slots, with_replacement)
        instances = self.order[self.starts[classes][:, None] + slots]
        return instances.reshape(-1), classes.repeat_interleave(self.k)


@dataclass
class TrainResult:
    """The EMA W (the result), the raw last W, the class ids in class-index order, and a loss log."""

    weight: torch.Tensor
    raw_weight: torch.Tensor
    class_ids: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0

    @property
    def iterations_per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else float("nan")


def train_w(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    config: TrainWConfig | None = None,
    origin_features: np.ndarray | torch.Tensor | None = None,
    origin_labels: np.ndarray | torch.Tensor | None = None,
    cpu: bool = False,
) -> TrainResult:
    """Train W on features [N, D] of generations with their origin ids [N] (ints or strings).

    ``origin_features`` [C, D] / ``origin_labels`` [C] are the origins' own features, used as extra
    instances when ``config.include_origins``. Arrays may be memmaps (rows are gathered per batch).
    ``cpu`` forces the CPU even with a GPU present. Run under ``accelerate launch`` for several GPUs:
    each process draws its P / world_size origins independently (seed + rank), so two processes may
    draw the same origin in one step; every process returns the same W (save it on the main one).
    """
    from accelerate import Accelerator

    config = config or TrainWConfig()
    # 1. Check inputs and build the instance table (generations, then origins if included).
    features, labels = _check_pair(features, labels, "features", "labels")
    sources = [features]
    all_labels = [labels]
    if config.include_origins:
        if origin_features is None or origin_labels is None:
            raise OripidError(
                "include_origins is set but no origin features were given; pass origin features and "
                "labels (e.g. --origin-features/--origin-labels) or set include_origins: false"
            )
        origin_features, origin_labels = _check_pair(
            origin_features, origin_labels, "origin features", "labels"
        )
        if origin_features.shape[1] != features.shape[1]:
            raise OripidError(
                f"origin features have dimension {origin_features.shape[1]}, generations {features.shape[1]}"
            )
        sources.append(origin_features)
        all_labels.append(origin_labels)
    class_ids, class_of_instance = np.unique(np.concatenate(all_labels), return_inverse=True)
    in_dim = int(features.shape[1])

    # 2. Accelerate, model, optimiser, sampler (each process draws its share of the P origins).
    accelerator = Accelerator(cpu=cpu)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.p_origins % world:
        raise OripidError(f"p_origins={config.p_origins} is not divisible by the {world} processes")
    torch.manual_seed(config.seed)
    model = _Model(in_dim, config.out_dim, len(class_ids), config.scale, config.margin)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    model, optimizer = accelerator.prepare(model, optimizer)
    sampler = PKSampler(class_of_instance, config.p_origins // world, config.k_instances, config.seed + rank)
    device = accelerator.device
    linear = accelerator.unwrap_model(model).linear
    ema = linear.weight.detach().clone()
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda":  # restored below: the setting is process-global
        torch.backends.cuda.matmul.allow_tf32 = config.tf32

    # 3. Train.
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    try:
        for step in range(config.total_iters):
            idx, cls = sampler.sample()
            x = _gather(sources, idx.numpy()).to(device, non_blocking=True)
            loss = model(x, cls.to(device))
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                ema.mul_(config.ema_decay).add_(linear.weight.detach(), alpha=1 - config.ema_decay)
            if step % config.log_every == 0 or step == config.total_iters - 1:
                entry = {"step": float(step), "loss": float(loss.detach()), "lr": lr}
                history.append(entry)
                logger.info(
                    "step %d/%d loss %.4f lr %.2e", step, config.total_iters, entry["loss"], entry["lr"]
                )
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    seconds = time.perf_counter() - start
    return TrainResult(
        weight=ema.float().cpu(),
        raw_weight=linear.weight.detach().float().cpu(),
        class_ids=class_ids,
        history=history,
        seconds=seconds,
        iterations=config.total_iters,
    )


def _check_pair(features, labels, name: str, label_name: str) -> tuple:
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if features.ndim != 2:
        raise OripidError(f"{name} must be a 2-D [N, D] array, got shape {tuple(features.shape)}")
    if labels.ndim != 1 or len(labels) != len(features):
        raise OripidError(
            f"{name}: {len(features)} rows but {label_name} has shape {labels.shape}; one id per row"
        )
    if len(features) == 0:
        raise OripidError(f"{name} is empty: nothing to train on")
    return features, labels


def _gather(sources: list, idx: np.ndarray) -> torch.Tensor:
    """Rows ``idx`` of the virtual concatenation of ``sources`` (generations, then origins), in order."""
    rows: torch.Tensor | None = None
    offset = 0
    for src in sources:
        n = len(src)
        where = np.nonzero((idx >= offset) & (idx < offset + n))[0]
        if where.size:
            local = idx[where] - offset
            if isinstance(src, torch.Tensor):
                block = src[torch.as_tensor(local)].float().cpu()
            else:  # array or memmap: fancy indexing copies just these rows
                block = torch.from_numpy(np.asarray(src[local], dtype=np.float32))
            if rows is None:
                rows = torch.empty(len(idx), block.shape[1])
            rows[torch.as_tensor(where)] = block
        offset += n
    assert rows is not None
    return rows
