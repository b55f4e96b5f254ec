"""`oripid prompts generate`: N checked prompts per accepted origin, from one source.

Entry: `generate_prompts(workdir, **options) -> PromptsSummary`; options are `PromptsConfig`.

Writes `prompts/prompts.parquet` (one row per prompt: origin_id, prompt_idx, prompt, source,
truncated, settings) with the source's and the checks' settings also in the file's schema
metadata, and `prompts/report.json` (what each check dropped or flagged, origins left short,
per target whether token counts were exact and from which tokenizer (`checks.counting_source`),
source statistics such as tokens and cost). An origin with fewer than N valid prompts fails the
run (`on_short="error"`, after the report is written) unless `on_short="keep"`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from oripid.builders import layout
from oripid.builders.ingest import parse_options, read_manifest, write_parquet_atomic
from oripid.errors import OripidError
from oripid.prompts.base import OriginRef, PromptSource
from oripid.prompts.checks import CheckConfig, PromptChecker
from oripid.prompts.source_openai import OpenAIOptions
from oripid.prompts.source_transformers import TransformersOptions

PROMPTS_REPORT = "prompts/report.json"
OPENAI_CACHE = "prompts/cache/openai"
SOURCES = ("file", "template", "transformers", "openai")

PROMPTS_SCHEMA = pa.schema(
    [
        ("origin_id", pa.string()),
        ("prompt_idx", pa.int32()),  # 0 .. N-1 within the origin
        ("prompt", pa.string()),
        ("source", pa.string()),  # file | template | transformers | openai
        ("truncated", pa.bool_()),  # shortened by length_policy="truncate"
        ("settings", pa.string()),  # JSON: source and checks settings (same on every row)
    ]
)


class FileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="JSONL, CSV or parquet of (origin_id or file name, prompt)")
    key_column: str | None = None
    prompt_column: str | None = None


class TemplateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template_dir: str | None = Field(
        None, description="folder of patterns/edits/styles/scenes.txt; default: shipped"
    )


class PromptsConfig(BaseModel):
    """Options of `generate_prompts`; embeddable in the dataset config."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["file", "template", "transformers", "openai"] = "template"
    per_origin: int = Field(20, ge=1, description="prompts per origin (OriPID: 20)")
    seed: int = Field(0, description="seeds the template source")
    on_short: Literal["error", "keep"] = "error"
    file: FileOptions = Field(default_factory=FileOptions)
    template: TemplateOptions = Field(default_factory=TemplateOptions)
    transformers: TransformersOptions = Field(default_factory=TransformersOptions)
    openai: OpenAIOptions = Field(default_factory=OpenAIOptions)
    checks: CheckConfig = Field(default_factory=CheckConfig)


class PromptsSummary(BaseModel):
    table: str
    origins: int
    prompts: int
    short_origins: int
    checks: dict[str, Any]
    source_stats: dict[str, Any]


def build_source(cfg: PromptsConfig, workdir: Path) -> PromptSource:
    """Construct the configured source; a missing file, model, key or dependency fails here."""
    if cfg.source == "file":
        from oripid.prompts.source_file import FileSource

        if not cfg.file.path:
            raise OripidError("prompts source 'file' needs file.path (CLI: --prompts-file PATH)")
        return FileSource(cfg.file.path, cfg.file.key_column, cfg.file.prompt_column)
    if cfg.source == "template":
        from oripid.prompts.source_template import TemplateSource

        return TemplateSource(cfg.template.template_dir, seed=cfg.seed)
    if cfg.source == "transformers":
        from oripid.prompts.source_transformers import TransformersSource

        return TransformersSource(cfg.transformers)
    from oripid.prompts.source_openai import OpenAISource

    return OpenAISource(cfg.openai, cache_dir=workdir / OPENAI_CACHE)


def load_origins(workdir: Path) -> list[OriginRef]:
    manifest = read_manifest(workdir)
    origins = [
        OriginRef(
            origin_id=r["origin_id"], image=workdir / r["image"], source=r["source"], sha256=r["sha256"]
        )
        for r in manifest.select(["origin_id", "image", "source", "sha256", "status"]).to_pylist()
        if r["status"] == "ok"
    ]
    if not origins:
        raise OripidError(
            f"{workdir / layout.ORIGINS_MANIFEST} has no accepted origins: check origins/ingest.json"
        )
    return sorted(origins, key=lambda o: o.origin_id)


def generate_prompts(workdir: str | os.PathLike, **options: Any) -> PromptsSummary:
    """Write `per_origin` checked prompts for every accepted origin of `workdir`.

    Example:
        >>> generate_prompts("work", source="template", per_origin=20)  # doctest: +SKIP
    """
    # 1. Check inputs and build the source (fails loudly on a missing model, file or key).
    cfg: PromptsConfig = parse_options(PromptsConfig, options, "prompts")
    workdir = Path(workdir)
    origins = load_origins(workdir)
    source = build_source(cfg, workdir)
    checker = PromptChecker(cfg.checks, workdir)
    settings = {"source": source.name, "per_origin": cfg.per_origin, "generator": source.settings()}
    settings["checks"] = checker.settings()
    settings_json = json.dumps(settings, sort_keys=True, default=str)

    # 2. Generate and check, origin by origin.
    kept: dict[str, list[tuple[str, bool]]] = {}
    for origin_id, candidates in source.generate(origins, cfg.per_origin):
        kept[origin_id] = checker.check(origin_id, candidates, cfg.per_origin)
    missing = [o.origin_id for o in origins if o.origin_id not in kept]
    for origin_id in missing:  # a source that skipped an origin: recorded, never silent
        kept[origin_id] = checker.check(origin_id, [], cfg.per_origin)

    # 3. Write the table (sorted: reruns give the same file) and the report.
    rows = [
        {
            "origin_id": oid,
            "prompt_idx": i,
            "prompt": text,
            "source": source.name,
            "truncated": cut,
            "settings": settings_json,
        }
        for oid in sorted(kept)
        for i, (text, cut) in enumerate(kept[oid])
    ]
    table = pa.Table.from_pylist(rows, schema=PROMPTS_SCHEMA).replace_schema_metadata(
        {"oripid.prompts": settings_json}
    )
    report = checker.report
    summary = PromptsSummary(
        table=layout.PROMPTS_TABLE,
        origins=len(origins),
        prompts=len(rows),
        short_origins=len(report.short_origins),
        checks=report.as_dict(),
        source_stats=getattr(source, "stats", {}),
    )
    report_path = workdir / PROMPTS_REPORT
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(
        json.dumps(summary.model_dump() | {"settings": settings}, indent=2, default=str) + "\n"
    )
    if report.short_origins and cfg.on_short == "error":
        examples = ", ".join(f"{k} ({v})" for k, v in list(report.short_origins.items())[:5])
        raise OripidError(
            f"{len(report.short_origins)} origins have fewer than {cfg.per_origin} valid prompts, e.g. {examples}; "
            f"see {report_path}. Fix the source, lower --per-origin, or pass on_short='keep'"
        )
    write_parquet_atomic(table, workdir / layout.PROMPTS_TABLE)
    return summary
