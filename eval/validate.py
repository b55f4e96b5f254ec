"""`oripid validate`: the gate every dataset passes before it is published.

1. integrity (every planned sample once, decodable, hash as indexed, failures within bounds),
2. leakage (train and test origins disjoint; queries' origins in the gallery),
3. the reference evaluation: VAE features, a linear W fitted on the training split, per-model
   mAP / acc@1 / micro-AP against the raw-feature (identity) baseline, and the same under blur
   and JPEG,
then report.json, report.md and plots in `validation/`, with the digest of all shard indexes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from oripid import __version__
from oripid.builders import layout
from oripid.builders.plan import ORIGIN_MODEL, read_plan
from oripid.config import DatasetConfig, load_config
from oripid.errors import OripidError
from oripid.eval.features import FeatureSettings, encode, extract_features, load_features, to_model_input
from oripid.eval.integrity import check_integrity
from oripid.eval.leakage import check_leakage
from oripid.eval.metrics import format_table
from oripid.eval.reference_eval import evaluate_features

log = logging.getLogger(__name__)


def _origin_ids(workdir: Path, split: str, model: str) -> dict[str, str]:
    mapping = {}
    for index in sorted(layout.shard_dir(workdir, split, model).glob("*.parquet")):
        table = pq.read_table(index, columns=["key", "origin_id"])
        mapping.update(
            zip(table.column("key").to_pylist(), table.column("origin_id").to_pylist(), strict=True)
        )
    return mapping


def _labelled(workdir: Path, split: str, model: str) -> tuple[np.ndarray, np.ndarray]:
    keys, features = load_features(workdir, split, model)
    origin_of = _origin_ids(workdir, split, model)
    return features, np.array([origin_of[key] for key in keys])


def _fit_w(config: DatasetConfig, train_x, train_y, origin_x, origin_y) -> tuple[torch.Tensor, dict]:
    settings = config.validation
    out_dim = min(settings.out_dim, train_x.shape[1])
    if settings.method == "closed-form":
        from oripid.eval.closed_form import ClosedFormConfig, fit_closed_form

        result = fit_closed_form(
            train_x,
            train_y,
            config=ClosedFormConfig(out_dim=out_dim),
            origin_features=origin_x,
            origin_labels=origin_y,
        )
    else:
        from oripid.eval.train_w import load_train_config, train_w

        train_config = load_train_config(None, out_dim=out_dim, **settings.sgd)
        result = train_w(
            train_x, train_y, config=train_config, origin_features=origin_x, origin_labels=origin_y
        )
    return result.weight, {
        "method": settings.method,
        "out_dim": out_dim,
        "seconds": round(result.seconds, 2),
        "classes": len(result.class_ids),
        "rows": len(train_x) + len(origin_x),
    }


def _query_images(workdir: Path, model: str, limit: int) -> tuple[list[Image.Image], list[str]]:
    from oripid.eval.features import iter_shard_images

    images, origins = [], []
    origin_of = _origin_ids(workdir, "query", model)
    for tar in sorted(layout.shard_dir(workdir, "query", model).glob("*.tar")):
        for key, image in iter_shard_images(tar):
            if len(images) >= limit:
                return images, origins
            images.append(image.convert("RGB"))
            origins.append(origin_of[key])
    return images, origins


def _robustness(workdir, config, registry, models, gallery_x, gallery_y, weight) -> list[dict]:
    """Learned-W mAP per model when the queries are blurred or re-encoded as JPEG."""
    from oripid.eval.reference_eval import evaluate_perturbations
    from oripid.eval.robustness import default_perturbations, perturb_all
    from oripid.models_registry.loader import load_vae

    settings = config.validation
    entry = registry.get(settings.vae_model)
    vae = load_vae(entry, config.build.variant, dtype="float32")
    size = FeatureSettings(settings.vae_model, config.build.variant).image_size(entry)
    batch = settings.feature_batch_size
    perturbations = default_perturbations(settings.blur_radii, settings.jpeg_qualities)
    queries = {m: _query_images(workdir, m, settings.robustness_queries_per_model) for m in models}
    queries = {m: q for m, q in queries.items() if q[0]}
    perturbed: dict[str, dict[str, np.ndarray]] = {p.name: {} for p in perturbations}
    for model, (images, _) in queries.items():
        for name, changed in perturb_all(images, perturbations).items():
            chunks = [
                encode(vae, to_model_input(changed[i : i + batch], size), "mean")
                for i in range(0, len(changed), batch)
            ]
            perturbed[name][model] = torch.cat(chunks).numpy()
    if not queries:
        return []
    return evaluate_perturbations(
        perturbed,
        {m: np.array(origins) for m, (_, origins) in queries.items()},
        gallery_x,
        gallery_y,
        weight=weight,
        seen_models=settings.seen_models,
    )


def _contact_sheets(workdir: Path, models: list[str], out_dir: Path, per_model: int = 6) -> list[str]:
    """Per model, origins beside their generations; and one sheet of every model side by side."""
    from oripid.eval.features import iter_shard_images
    from oripid.eval.plots import contact_sheet

    gallery = {}
    for tar in sorted(layout.shard_dir(workdir, "gallery", ORIGIN_MODEL).glob("*.tar")):
        for key, image in iter_shard_images(tar):
            gallery[key] = image.convert("RGB")
    generations: dict[str, dict[str, Image.Image]] = {}
    for model in models:
        origin_of = _origin_ids(workdir, "query", model)
        for tar in sorted(layout.shard_dir(workdir, "query", model).glob("*.tar")):
            for key, image in iter_shard_images(tar):
                generations.setdefault(origin_of[key], {})[model] = image.convert("RGB")
    written = []
    for model in models:
        rows = [
            [("origin " + o, gallery[o]), (model, g[model])]
            for o, g in sorted(generations.items())
            if model in g and o in gallery
        ][:per_model]
        if rows:
            written.append(contact_sheet(rows, out_dir / f"contact_{model}.png").name)
    rows = [
        [("origin " + o, gallery[o])] + [(m, g[m]) for m in models if m in g]
        for o, g in sorted(generations.items())
        if o in gallery
    ][:per_model]
    if rows:
        written.append(contact_sheet(rows, out_dir / "contact_all_models.png").name)
    return written


def validate(workdir: str | Path, config: DatasetConfig | None = None, registry=None) -> dict:
    """Run every check, write validation/report.json|.md and the plots; return the report."""
    from oripid.eval.matcher import match, positives_from_labels
    from oripid.eval.plots import map_bar_chart, rank_histogram
    from oripid.eval.w_io import save_w
    from oripid.models_registry.registry import load_registry

    # 1. Check inputs.
    started = time.perf_counter()
    workdir = Path(workdir)
    config = config or load_config(workdir / layout.CONFIG)
    registry = registry or load_registry(workdir)
    plan = read_plan(workdir)
    settings = config.validation
    out_dir = workdir / layout.VALIDATION_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"oripid_version": __version__, "digest": layout.shard_index_digest(workdir), "checks": {}}

    # 2. Integrity and leakage.
    report["checks"]["integrity"] = check_integrity(workdir, plan, settings.thresholds.max_failed_fraction)
    report["checks"]["leakage"] = check_leakage(workdir, settings.near_duplicate_threshold)

    # 3. Reference evaluation on VAE features (extracted now for shards that have none).
    models = list(config.generate["query"].models) if "query" in config.generate else []
    feature_settings = FeatureSettings(
        settings.vae_model,
        config.build.variant,
        latent=settings.latent,
        batch_size=settings.feature_batch_size,
    )
    evaluation: dict = {"passed": False, "messages": []}
    if not report["checks"]["integrity"]["passed"]:
        evaluation["messages"].append("skipped: the shards failed the integrity check; fix them first")
    elif not models or "train" not in config.generate:
        evaluation["messages"].append("the config generates no train and query splits: nothing to evaluate")
    else:
        extract_features(workdir, feature_settings, registry=registry)
        train_x, train_y = _labelled(workdir, "train", config.generate["train"].models[0])
        origin_x, origin_y = _labelled(workdir, "train_origins", ORIGIN_MODEL)
        gallery_x, gallery_y = _labelled(workdir, "gallery", ORIGIN_MODEL)
        queries = {m: _labelled(workdir, "query", m) for m in models}
        weight, fit = _fit_w(config, train_x, train_y, origin_x, origin_y)
        save_w(out_dir / "w.safetensors", weight, {"fit": fit, "digest": report["digest"]})
        tables = {}
        for name, w in (("identity", None), ("learned_w", weight)):
            tables[name] = evaluate_features(
                {m: q[0] for m, q in queries.items()},
                {m: q[1] for m, q in queries.items()},
                gallery_x,
                gallery_y,
                weight=w,
                seen_models=settings.seen_models,
            )
        ranks = {}
        for model, (qx, qy) in queries.items():
            result = match(qx, gallery_x, k=1, positives=positives_from_labels(qy, gallery_y), weight=weight)
            ranks[model] = result.true_origin_rank()
        evaluation.update(
            fit=fit,
            tables=tables,
            feature_dim=int(train_x.shape[1]),
            gallery=len(gallery_x),
            queries={m: len(q[0]) for m, q in queries.items()},
        )
        if settings.robustness_queries_per_model:
            evaluation["robustness"] = _robustness(
                workdir, config, registry, models, gallery_x, gallery_y, weight
            )
        # Model rows are named by their model; the seen/unseen means follow them.
        group = {row["group"]: row for row in tables["learned_w"] if row["model"] not in models}
        limits = settings.thresholds
        seen_map = group.get("seen", {}).get("mAP")
        unseen_map = group.get("unseen", {}).get("mAP")
        learned_all = np.mean([row["mAP"] for row in tables["learned_w"] if row["model"] in models])
        identity_all = np.mean([row["mAP"] for row in tables["identity"] if row["model"] in models])
        evaluation["mean_map"] = {"learned_w": float(learned_all), "identity": float(identity_all)}
        for value, limit, name in (
            (seen_map, limits.min_map_seen, "seen-model mAP"),
            (unseen_map, limits.min_map_unseen, "unseen-model mAP"),
            (learned_all - identity_all, limits.min_gain_over_identity, "mAP gain of W over raw features"),
        ):
            if limit is not None and value is not None and value < limit:
                evaluation["messages"].append(f"{name} {value:.3f} is below the threshold {limit:.3f}")
        evaluation["passed"] = not evaluation["messages"]
        plots = [
            map_bar_chart(
                {"identity": tables["identity"], "learned W": tables["learned_w"]},
                models,
                out_dir / "map_per_model.png",
            ).name,
            rank_histogram(ranks, out_dir / "rank_histogram.png").name,
        ]
        plots += _contact_sheets(workdir, models, out_dir)
        report["plots"] = plots
    report["checks"]["reference_eval"] = evaluation
    report["metrics"] = evaluation.get("tables", {})
    report["passed"] = all(check["passed"] for check in report["checks"].values())
    report["seconds"] = round(time.perf_counter() - started, 2)

    # 4. Write the report (json last: publishing reads it).
    (out_dir / "report.md").write_text(render_report(report))
    tmp = out_dir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True, default=_jsonable))
    tmp.replace(out_dir / "report.json")
    return report


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to json")


def render_report(report: dict) -> str:
    lines = [
        f"# Validation: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        f"Shard index digest: `{report['digest']}`",
        "",
    ]
    for name, check in report["checks"].items():
        lines.append(f"## {name}: {'passed' if check['passed'] else 'FAILED'}")
        lines += [f"- {message}" for message in check.get("messages", [])] or ["- no problems found"]
        lines.append("")
    evaluation = report["checks"]["reference_eval"]
    for name, rows in evaluation.get("tables", {}).items():
        lines += [f"### {name} (%)", "", format_table(rows), ""]
    if evaluation.get("robustness"):
        by_perturbation: dict[str, list] = {}
        for row in evaluation["robustness"]:
            by_perturbation.setdefault(row["perturbation"], []).append(
                {k: v for k, v in row.items() if k != "perturbation"}
            )
        for name, rows in by_perturbation.items():
            lines += [f"### learned W, queries under {name} (%)", "", format_table(rows), ""]
    for plot in report.get("plots", []):
        lines.append(f"![{plot}]({plot})")
    return "\n".join(lines) + "\n"


def read_report(workdir: str | Path) -> dict:
    path = Path(workdir) / layout.VALIDATION_DIR / "report.json"
    if not path.is_file():
        raise OripidError(f"{path}: no validation report; run `oripid validate --workdir {workdir}`")
    return json.loads(path.read_text())
