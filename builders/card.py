"""The Hub dataset card: `render_card(workdir=...)` fills DATASET_CARD.md into `<workdir>/README.md`.

Everything in the card is read from the workspace files whose contracts docs/workspace.md fixes
(shard indexes, stats, the json member of the samples, the prompts table, the validation report),
so the card describes the shards that are there, not the config that was meant.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from oripid.builders import layout
from oripid.errors import OripidError

logger = logging.getLogger(__name__)

# The template lives at the repository root (DESIGN.md); builders/assets/DATASET_CARD.md links to
# it so that the wheel carries a copy.
DEFAULT_TEMPLATE = Path(__file__).parent / "assets" / "DATASET_CARD.md"

# Splits whose shards hold origin images (model "origin"), not generations: they get their own
# configs, because their json member has other fields and a config must share one schema.
ORIGIN_SPLITS = ("gallery", "train_origins")
ORIGIN_CONFIG_SPLIT = {"gallery": "gallery", "train_origins": "train"}

SETTING_FIELDS = (
    "checkpoint",
    "revision",
    "pipeline",
    "strength",
    "guidance_scale",
    "num_inference_steps",
    "scheduler",
    "resolution",
    "dtype",
)


@dataclass(frozen=True)
class ModelLicence:
    hub_id: str  # a Hub licence identifier, or "other"
    name: str
    note: str


# Per-model licences of the diffusion models whose outputs the dataset holds. A sample json or
# stats `settings` carrying `licence`/`license` overrides the table (the registry carries one).
MODEL_LICENCES: dict[str, ModelLicence] = {
    "sd2": ModelLicence(
        "openrail++", "CreativeML Open RAIL++-M", "use-based restrictions, commercial use allowed"
    ),
    "sdxl": ModelLicence(
        "openrail++", "CreativeML Open RAIL++-M", "use-based restrictions, commercial use allowed"
    ),
    "opendalle": ModelLicence(
        "cc-by-nc-nd-4.0", "CC BY-NC-ND 4.0", "non-commercial, no derivatives: the strictest in the set"
    ),
    "colorfulxl": ModelLicence(
        "other",
        "see the model card",
        "an SDXL fine-tune; likely CreativeML Open RAIL++-M, check its model card",
    ),
    "kandinsky3": ModelLicence("apache-2.0", "Apache 2.0", "permissive"),
    "sd3": ModelLicence(
        "other",
        "Stability AI Community License (stabilityai-ai-community)",
        "free below the revenue threshold set in the licence; an enterprise licence above it",
    ),
    "kolors": ModelLicence(
        "other",
        "Kolors model licence",
        "non-commercial unless the commercial use is registered with Kuaishou",
    ),
}
UNKNOWN_LICENCE = ModelLicence("other", "see the model card", "not in oripid's licence table")
# Licence identifiers the Hub's `license:` metadata accepts (the common ones); others are `other`.
HUB_LICENCE_IDS = {
    "apache-2.0",
    "mit",
    "openrail",
    "openrail++",
    "creativeml-openrail-m",
    "bigscience-openrail-m",
    "cc0-1.0",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nc-nd-4.0",
    "cc-by-nd-4.0",
    "bsd-2-clause",
    "bsd-3-clause",
    "gpl-3.0",
    "lgpl-3.0",
    "agpl-3.0",
    "mpl-2.0",
    "llama2",
    "llama3",
    "gemma",
    "other",
    "unknown",
}

CITATION_KEY = "wang2025origin"


@dataclass
class ShardGroup:
    """All shards of one (split, model) pair, summed."""

    split: str
    model: str
    tars: list[Path] = field(default_factory=list)
    samples: int = 0
    origins: set[str] = field(default_factory=set)
    bytes: int = 0
    tar_bytes: int = 0
    image_exts: set[str] = field(default_factory=set)
    planned: int = 0
    failed: int = 0
    failure_reasons: Counter = field(default_factory=Counter)
    settings: list[dict] = field(default_factory=list)

    @property
    def is_origin(self) -> bool:
        return self.split in ORIGIN_SPLITS


def scan_shards(workdir: Path) -> dict[tuple[str, str], ShardGroup]:
    """Read every finished shard's index and stats; refuse a shard whose build did not finish."""
    root = Path(workdir)
    data = root / layout.DATA_DIR
    tars = sorted(data.glob("*/*/*.tar")) if data.is_dir() else []
    if not tars:
        raise OripidError(f"no shards under {data}: run `oripid build` first")
    groups: dict[tuple[str, str], ShardGroup] = {}
    for tar in tars:
        split, model = tar.parent.parent.name, tar.parent.name
        index, stats_path = tar.with_suffix(".parquet"), tar.with_suffix(".json")
        if not index.exists() or not stats_path.exists():
            raise OripidError(
                f"shard {tar.relative_to(root)} has no index or stats file, so its build did not finish: "
                "rerun `oripid build` (it rebuilds only unfinished shards)"
            )
        group = groups.setdefault((split, model), ShardGroup(split, model))
        table = pq.read_table(index, columns=["origin_id", "bytes", "image_ext"])
        stats = json.loads(stats_path.read_text())
        group.tars.append(tar)
        group.samples += table.num_rows
        group.origins.update(table.column("origin_id").to_pylist())
        group.bytes += sum(table.column("bytes").to_pylist())
        group.tar_bytes += tar.stat().st_size
        group.image_exts.update(table.column("image_ext").to_pylist())
        group.planned += int(stats.get("planned", table.num_rows))
        group.failed += int(stats.get("failed", 0))
        group.failure_reasons.update(stats.get("failure_reasons") or {})
        if stats.get("settings"):
            group.settings.append(stats["settings"])
    return groups


def first_sample_json(tar: Path) -> dict:
    """The json member of the first sample of a shard (it records the settings actually used)."""
    with tarfile.open(tar) as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".json"):
                handle = archive.extractfile(member)
                return json.loads(handle.read()) if handle else {}
    return {}


def model_settings(group: ShardGroup) -> dict[str, Any]:
    """Settings of one model, from the stats `settings` of its shards, completed by a sample's json."""
    merged: dict[str, list] = defaultdict(list)
    sources = group.settings + [first_sample_json(group.tars[0])]
    for settings in sources:
        values = dict(settings)
        if "width" in values and "height" in values:
            values.setdefault("resolution", f"{values['width']}x{values['height']}")
        for key, value in values.items():
            if value is not None and value not in merged[key]:
                merged[key].append(value)
    # A sample's width/height is the stored image size; the stats `settings` say what was asked
    # for. Prefer the stats when both exist, and show disagreement between shards as "a / b".
    out: dict[str, Any] = {}
    for key, values in merged.items():
        if key == "resolution" and group.settings:
            stats_res = [
                f"{s['width']}x{s['height']}" for s in group.settings if "width" in s and "height" in s
            ]
            values = list(dict.fromkeys(stats_res)) or values
        out[key] = values[0] if len(values) == 1 else " / ".join(str(v) for v in values)
    return out


def model_licence(model: str, settings: dict[str, Any]) -> ModelLicence:
    """The table's licence for a model oripid knows, unless its shards declare another one.

    The Hub's `license:` metadata takes its own identifiers; any other declared licence is
    published as `other` with the declared name.
    """
    declared = settings.get("licence") or settings.get("license")
    known = MODEL_LICENCES.get(model)
    if declared:
        hub_id = declared if declared in HUB_LICENCE_IDS else "other"
        if known is None or hub_id != known.hub_id:
            return ModelLicence(hub_id, str(declared), "as declared by the model registry")
    return known or UNKNOWN_LICENCE


def size_category(n: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    for bound, label in bounds:
        if n < bound:
            return label
    return "n>1T" if n >= 10**12 else "1B<n<10B"


def build_configs(groups: dict[tuple[str, str], ShardGroup]) -> list[dict]:
    """Hub `configs`: one per model (its splits), `gallery`, `train_origins`, and `all` (default).

    A config's splits must share one member schema (the webdataset loader infers features from
    one shard), hence origins apart from generations, and `all` only when one image type is used.
    """
    generated = {k: g for k, g in groups.items() if not g.is_origin}
    configs: list[dict] = []
    models = sorted({model for _, model in generated})
    for model in models:
        data_files = [
            {"split": split, "path": f"{layout.DATA_DIR}/{split}/{model}/*.tar"}
            for split, m in sorted(generated, key=_split_order)
            if m == model
        ]
        configs.append({"config_name": model, "data_files": data_files})
    for split in ORIGIN_SPLITS:
        dirs = sorted(m for s, m in groups if s == split)
        if dirs:
            paths = [f"{layout.DATA_DIR}/{split}/{m}/*.tar" for m in dirs]
            configs.append(
                {
                    "config_name": split,
                    "data_files": [
                        {"split": ORIGIN_CONFIG_SPLIT[split], "path": paths[0] if len(paths) == 1 else paths}
                    ],
                }
            )
    exts = {ext for g in generated.values() for ext in g.image_exts}
    if generated and len(exts) == 1:
        by_split: dict[str, list[str]] = defaultdict(list)
        for split, model in sorted(generated, key=_split_order):
            by_split[split].append(f"{layout.DATA_DIR}/{split}/{model}/*.tar")
        data_files = [{"split": s, "path": p[0] if len(p) == 1 else p} for s, p in by_split.items()]
        configs.insert(0, {"config_name": "all", "default": True, "data_files": data_files})
    elif configs:
        configs[0]["default"] = True
    return configs


def _split_order(key: tuple[str, str]) -> tuple[int, str, str]:
    order = {"train": 0, "query": 1, "gallery": 2, "train_origins": 3}
    return (order.get(key[0], 9), key[0], key[1])


def build_metadata(
    groups: dict[tuple[str, str], ShardGroup], licences: dict[str, ModelLicence], pretty_name: str
) -> dict:
    hub_ids = sorted({lic.hub_id for lic in licences.values()})
    metadata: dict[str, Any] = {
        "pretty_name": pretty_name,
        "license": hub_ids[0] if len(hub_ids) == 1 else hub_ids,
    }
    if "other" in hub_ids or len(hub_ids) > 1:
        # Several licences apply at once; the card's Licence section explains which covers what.
        metadata["license_name"] = "oripid-per-model-licences"
        metadata["license_link"] = "README.md#licence"
    metadata.update(
        {
            "task_categories": ["image-feature-extraction", "image-to-image"],
            "tags": [
                "origin-identification",
                "image-retrieval",
                "image-provenance",
                "diffusion",
                "image-to-image",
                "synthetic",
                "webdataset",
                "oripid",
            ],
            "size_categories": [size_category(sum(g.samples for g in groups.values()))],
            "configs": build_configs(groups),
        }
    )
    return metadata


# ---------------------------------------------------------------------- markdown helpers
def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        # Free-form details (a validation check's) stay short; a table cell is no place for a dump.
        text = json.dumps(value, sort_keys=True)
        if len(text) > 160:
            text = text[:157] + "..."
    else:
        text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def render_metrics(metrics: Any, title: str = "", level: int = 3) -> str:
    """Render whatever the validator put in `metrics`: scalars, tables (dict of dicts, list of dicts), nests."""
    heading = f"{'#' * level} {title}\n\n" if title else ""
    if _is_scalar(metrics):
        return f"{heading}{_cell(metrics)}\n"
    if isinstance(metrics, list):
        if metrics and all(isinstance(r, dict) for r in metrics):
            header = list(dict.fromkeys(k for r in metrics for k in r))
            return heading + md_table(header, [[r.get(k) for k in header] for r in metrics]) + "\n"
        return heading + ", ".join(_cell(v) for v in metrics) + "\n"
    if isinstance(metrics, dict):
        scalars = {k: v for k, v in metrics.items() if _is_scalar(v)}
        table_like = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, dict) and v and all(_is_scalar(x) for x in v.values())
        }
        parts = [heading] if heading else []
        if scalars:
            parts.append(md_table(["metric", "value"], [[k, v] for k, v in scalars.items()]) + "\n")
        if table_like and len(table_like) > 1:
            # A dict of flat dicts is a table: rows are its keys (models, say), columns the inner keys.
            columns = list(dict.fromkeys(c for v in table_like.values() for c in v))
            parts.append(
                md_table([""] + columns, [[k] + [v.get(c) for c in columns] for k, v in table_like.items()])
            )
            parts.append("")
        for key, value in metrics.items():
            if key in scalars or (key in table_like and len(table_like) > 1):
                continue
            parts.append(render_metrics(value, title=str(key), level=min(level + 1, 6)))
        return "\n".join(parts)
    return f"{heading}```\n{metrics!r}\n```\n"


# ---------------------------------------------------------------------- sections
def _counts_section(groups: dict[tuple[str, str], ShardGroup]) -> tuple[str, str]:
    rows = []
    for (split, model), g in sorted(groups.items(), key=lambda kv: _split_order(kv[0])):
        rows.append(
            [split, model, len(g.tars), g.samples, len(g.origins), g.failed, f"{g.tar_bytes / 1e6:.2f} MB"]
        )
    table = md_table(["split", "model", "shards", "images", "origins", "failed", "size"], rows)
    models = sorted({m for (s, m), g in groups.items() if not g.is_origin})
    queries = sum(g.samples for (s, _), g in groups.items() if s == "query")
    train = sum(g.samples for (s, _), g in groups.items() if s == "train")
    gallery = sum(g.samples for (s, _), g in groups.items() if s == "gallery")
    summary = (
        f"It holds **{train:,}** training images, **{queries:,}** query images from **{len(models)}** "
        f"diffusion model(s) ({', '.join(models)}) and a gallery of **{gallery:,}** reference images."
    )
    return table, summary


def _settings_section(settings: dict[str, dict]) -> str:
    if not settings:
        return "No generated shards."
    rows = [[model] + [s.get(f) for f in SETTING_FIELDS] for model, s in sorted(settings.items())]
    table = md_table(["model", *SETTING_FIELDS], rows)
    # The builder records `variant`; anything but the real checkpoints must not pass for data.
    test_builds = sorted(m for m, s in settings.items() if s.get("variant") not in (None, "real"))
    if test_builds:
        table = (
            f"> **Test build**: {', '.join(test_builds)} were generated with tiny random-weight pipelines, "
            "not the real checkpoints. These images are not the dataset.\n\n" + table
        )
    return table


def _prompts_section(workdir: Path) -> str:
    path = Path(workdir) / layout.PROMPTS_TABLE
    if not path.exists():
        return f"The prompts table (`{layout.PROMPTS_TABLE}`) is not in the workspace; each sample's json holds its prompt."
    columns = pq.read_schema(path).names
    table = pq.read_table(path, columns=[c for c in ("origin_id", "source") if c in columns])
    origins = len(set(table.column("origin_id").to_pylist())) if "origin_id" in columns else 0
    text = f"{table.num_rows:,} prompts for {origins:,} origins (the prompt of every image is in its json member)"
    if "source" not in columns:  # the contract names a source column; say so rather than guess
        return text + "; the prompts table records no source."
    sources = Counter(table.column("source").to_pylist())
    rows = [[source, count] for source, count in sources.most_common()]
    return text + ", by source:\n\n" + md_table(["source", "prompts"], rows)


def _failures_section(groups: dict[tuple[str, str], ShardGroup]) -> str:
    failed = {k: g for k, g in groups.items() if g.failed}
    planned = sum(g.planned for g in groups.values())
    total_failed = sum(g.failed for g in groups.values())
    if not failed:
        return f"All {planned:,} planned images were written; none failed."
    rows = []
    for (split, model), g in sorted(failed.items(), key=lambda kv: _split_order(kv[0])):
        reasons = (
            ", ".join(f"{reason}: {n}" for reason, n in g.failure_reasons.most_common()) or "not recorded"
        )
        rows.append([split, model, g.planned, g.failed, reasons])
    return (
        f"{total_failed:,} of {planned:,} planned images failed after retries and are absent; every failure is "
        "listed with its key and reason in its shard's stats file.\n\n"
        + md_table(["split", "model", "planned", "failed", "reasons"], rows)
    )


def _validation_section(workdir: Path, plots: list[str]) -> str:
    path = Path(workdir) / layout.VALIDATION_DIR / "report.json"
    if not path.exists():
        return "**Not validated.** `oripid validate` has not been run on these shards."
    report = json.loads(path.read_text())
    current = report.get("digest") == layout.shard_index_digest(workdir)
    status = "passed" if report.get("passed") else "FAILED"
    lines = [
        f"`oripid validate` **{status}** on shard index digest `{str(report.get('digest'))[:16]}`"
        + ("" if current else " (**stale**: the shards changed since)")
        + ".",
        "",
    ]
    checks = report.get("checks") or {}
    if checks:
        rows = []
        for name, check in checks.items():
            check = check if isinstance(check, dict) else {"passed": check}
            rows.append([name, "yes" if check.get("passed") else "no", check.get("details")])
        lines += [md_table(["check", "passed", "details"], rows), ""]
    if report.get("metrics"):
        lines += [render_metrics(report["metrics"], title="Reference evaluation", level=3), ""]
    for plot in plots:
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    if (Path(workdir) / layout.VALIDATION_DIR / "report.md").exists():
        lines.append(
            f"The full report is [`{layout.VALIDATION_DIR}/report.md`]({layout.VALIDATION_DIR}/report.md)."
        )
    return "\n".join(lines).rstrip()


def _licence_section(licences: dict[str, ModelLicence], checkpoints: dict[str, str]) -> str:
    rows = []
    for model, lic in sorted(licences.items()):
        checkpoint = checkpoints.get(model) or ""
        # Only a Hub repository id gets a link (tiny test builds record e.g. "tiny:sd2").
        is_repo = re.fullmatch(r"[\w.-]+/[\w.-]+", checkpoint)
        link = f"[{checkpoint}](https://huggingface.co/{checkpoint})" if is_repo else checkpoint
        rows.append([model, link, lic.name, lic.hub_id, lic.note])
    table = md_table(["model", "checkpoint", "licence", "Hub id", "notes"], rows)
    return (
        "Each model's images are outputs of that model and follow its licence; the dataset as a whole is only "
        "as permissive as the strictest one it contains, so use it for **non-commercial research** unless you "
        "keep to the configurations whose licences allow more. The origins keep the licences of their source "
        "collection (OriPID's origins come from DISC21, itself drawn from YFCC100M under Creative Commons "
        "licences); check the source named in the workspace config.\n\n" + table
    )


def _fill(template: str, values: dict[str, str]) -> str:
    names = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", template))
    missing, unused = names - values.keys(), values.keys() - names
    if missing:
        raise OripidError(f"the card template has placeholders oripid does not fill: {sorted(missing)}")
    if unused:
        logger.debug("card template does not use: %s", sorted(unused))
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m.group(1)], template)


# ---------------------------------------------------------------------- entry point
def render_card(
    *,
    workdir: Path,
    repo_id: str | None = None,
    template: Path | None = None,
    pretty_name: str = "OriPID: origins and image-to-image diffusion generations",
) -> Path:
    """Render the dataset card into `<workdir>/README.md` and return its path.

    `repo_id` appears in the loading examples (a placeholder without it). The YAML header carries
    the Hub metadata, including `configs` so that `load_dataset(repo, "<model>")` works.
    """
    # 1. Check inputs.
    workdir = Path(workdir)
    template = Path(template) if template else DEFAULT_TEMPLATE
    if not template.exists():
        raise OripidError(f"card template {template} not found: pass template= or run from a source checkout")

    # 2. Read the shards (counts, failures, settings).
    groups = scan_shards(workdir)
    settings = {
        model: model_settings(g)
        for (split, model), g in groups.items()
        if not g.is_origin and split == "query"
    }
    for (_split, model), g in groups.items():  # a model with train shards only still gets a row
        if not g.is_origin and model not in settings:
            settings[model] = model_settings(g)
    licences = {model: model_licence(model, s) for model, s in settings.items()}

    # 3. Metadata and sections.
    metadata = build_metadata(groups, licences, pretty_name)
    plots = sorted(p.relative_to(workdir).as_posix() for p in (workdir / layout.VALIDATION_DIR).glob("*.png"))
    counts_table, summary = _counts_section(groups)
    config_names = [c["config_name"] for c in metadata["configs"]]
    generated_models = sorted(settings)
    # An unseen model makes the better example; SDXL when present, being the best known.
    unseen = [m for m in generated_models if m != "sd2"]
    example_model = "sdxl" if "sdxl" in unseen else (unseen or generated_models or [""])[0]
    oripid_versions = sorted(
        {str(s.get("oripid_version")) for s in settings.values() if s.get("oripid_version")}
    )
    values = {
        "yaml": yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000).rstrip(),
        "pretty_name": pretty_name,
        "oripid_version": " / ".join(oripid_versions),
        "summary": summary,
        "counts_table": counts_table,
        "settings_table": _settings_section(settings),
        "prompts_section": _prompts_section(workdir),
        "failures_section": _failures_section(groups),
        "validation_section": _validation_section(workdir, plots),
        "config_names": ", ".join(f"`{n}`" for n in config_names),
        "repo_id": repo_id or "<user>/<dataset>",
        "example_model": example_model,
        "licence_section": _licence_section(
            licences, {m: str(s["checkpoint"]) for m, s in settings.items() if s.get("checkpoint")}
        ),
    }

    # 4. Write README.md atomically: a half-written card must never be uploaded.
    out = workdir / layout.CARD
    partial = out.with_suffix(".md.partial")
    partial.write_text(_fill(template.read_text(), values))
    partial.replace(out)
    logger.info("wrote %s (%d configs: %s)", out, len(config_names), ", ".join(config_names))
    return out
