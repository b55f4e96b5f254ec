"""The `train-w` stage: read features from disk, fit W (SGD recipe or closed form), save it.

One entry function with keyword arguments; the CLI only parses. The saved safetensors metadata records
the method, the full config and the data sizes, so a W file says how it was made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from accelerate import PartialState

from oripid.errors import OripidError, validated
from oripid.eval.arrays import open_features, open_labels
from oripid.eval.closed_form import ClosedFormConfig, fit_closed_form
from oripid.eval.train_w import load_train_config, train_w
from oripid.eval.w_io import save_w

logger = logging.getLogger(__name__)


def fit_w(
    *,
    features: str | Path,
    labels: str | Path,
    out: str | Path,
    method: Literal["sgd", "closed-form"] = "sgd",
    origin_features: str | Path | None = None,
    origin_labels: str | Path | None = None,
    config: str | Path | None = None,
    overrides: Mapping[str, object] | None = None,
    cpu: bool = False,
) -> Path:
    """Fit W on ``features`` (.npy [N, D] or a folder of .npy chunks) and ``labels`` (.npy origin ids).

    ``origin_features``/``origin_labels`` are the training origins' own features (used when the
    config's ``include_origins`` is true, the default). ``config`` is a YAML mapping of the method's
    config fields; ``overrides`` (None values ignored) win over it. Returns the written path.
    """
    # 1. Open inputs (memory-mapped; nothing large is read yet).
    x = open_features(features)
    y = open_labels(labels, expected_rows=len(x))
    ox = oy = None
    if origin_features is not None or origin_labels is not None:
        if origin_features is None or origin_labels is None:
            raise OripidError("give both --origin-features and --origin-labels, or neither")
        ox = open_features(origin_features)
        oy = open_labels(origin_labels, expected_rows=len(ox))

    # 2. Fit.
    if method == "sgd":
        cfg = load_train_config(config, **dict(overrides or {}))
        result = train_w(x, y, config=cfg, origin_features=ox, origin_labels=oy, cpu=cpu)
        weight, seconds, extra = result.weight, result.seconds, {"final_loss": result.history[-1]["loss"]}
        n_classes = len(result.class_ids)
    elif method == "closed-form":
        cfg = _closed_form_config(config, overrides or {})
        result = fit_closed_form(x, y, config=cfg, origin_features=ox, origin_labels=oy)
        weight, seconds, extra = result.weight, result.seconds, {"rows": result.rows}
        n_classes = len(result.class_ids)
    else:
        raise OripidError(f"unknown method {method!r}; use 'sgd' or 'closed-form'")

    # 3. Save with provenance.
    meta = {
        "method": method,
        "config": cfg.model_dump(mode="json"),
        "features": str(features),
        "n_features": len(x),
        "n_origin_features": 0 if ox is None else len(ox),
        "n_origins": n_classes,
        "seconds": round(seconds, 3),
        **extra,
    }
    path = Path(out)
    if PartialState().is_main_process:  # every process holds the same W; one writes it
        save_w(path, weight, meta)
        logger.info("wrote %s: W %s by %s in %.1f s", path, tuple(weight.shape), method, seconds)
    PartialState().wait_for_everyone()
    return path


def _closed_form_config(path: str | Path | None, overrides: Mapping[str, object]) -> ClosedFormConfig:
    values: dict[str, object] = {}
    if path is not None:
        try:
            values.update(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
            raise OripidError(f"{path}: cannot read the closed-form config ({exc})") from exc
    values.update(
        {k: v for k, v in overrides.items() if v is not None and k in ClosedFormConfig.model_fields}
    )
    return validated(ClosedFormConfig, values, f"{path or 'overrides'}: closed-form config")
