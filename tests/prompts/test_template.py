"""Template source: offline, deterministic, seeded per origin, no two prompts of an origin alike."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from oripid.builders import layout
from oripid.errors import OripidError
from oripid.prompts.generate import generate_prompts
from oripid.prompts.source_template import TEMPLATE_DIR, TemplateSource


def test_prompts_are_distinct_seeded_and_use_distinct_edits():
    source = TemplateSource(seed=0)
    edits = source.parts["edits"]
    a = [p for _, p in zip(range(20), source.candidates("T000000"), strict=False)]
    assert len(a) == len(set(a)) == 20
    used = [next(e for e in edits if p.startswith(e) or f", {e}" in p or f" {e}" in p) for p in a]
    assert len(set(used)) == 20, "each prompt of an origin carries its own edit"
    again = [p for _, p in zip(range(20), TemplateSource(seed=0).candidates("T000000"), strict=False)]
    assert again == a, "same seed, same origin: same prompts"
    other = [p for _, p in zip(range(20), source.candidates("T000001"), strict=False)]
    assert other != a, "seeded per origin"
    reseeded = [p for _, p in zip(range(20), TemplateSource(seed=1).candidates("T000000"), strict=False)]
    assert reseeded != a


def test_generate_writes_the_table_and_reruns_identically(workspace):
    summary = generate_prompts(workspace, source="template", per_origin=20)
    table = pq.read_table(workspace / layout.PROMPTS_TABLE)
    assert summary.prompts == table.num_rows == 4 * 20 and summary.short_origins == 0
    assert table.column_names == ["origin_id", "prompt_idx", "prompt", "source", "truncated", "settings"]
    rows = table.to_pylist()
    for origin in {r["origin_id"] for r in rows}:
        mine = [r for r in rows if r["origin_id"] == origin]
        assert [r["prompt_idx"] for r in mine] == list(range(20))
        assert len({r["prompt"] for r in mine}) == 20
    assert b"templates_sha256" in table.schema.metadata[b"oripid.prompts"]
    first = (workspace / layout.PROMPTS_TABLE).read_bytes()
    generate_prompts(workspace, source="template", per_origin=20)
    assert (workspace / layout.PROMPTS_TABLE).read_bytes() == first


def test_editable_templates_and_their_errors(workspace, tmp_path):
    custom = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, custom)
    (custom / "edits.txt").write_text("paint it red\npaint it blue\n")
    (custom / "patterns.txt").write_text("{edit}\n")
    with pytest.raises(OripidError, match="fewer than 3 valid prompts"):
        generate_prompts(workspace, source="template", per_origin=3, template={"template_dir": str(custom)})
    summary = generate_prompts(
        workspace, source="template", per_origin=2, template={"template_dir": str(custom)}
    )
    prompts = {r["prompt"] for r in pq.read_table(workspace / layout.PROMPTS_TABLE).to_pylist()}
    assert prompts == {"paint it red", "paint it blue"} and summary.prompts == 8
    (custom / "patterns.txt").write_text("{style} only\n")
    with pytest.raises(OripidError, match=r"has no \{edit\}"):
        TemplateSource(custom)
    (custom / "styles.txt").unlink()
    with pytest.raises(OripidError, match="styles.txt is missing"):
        TemplateSource(custom)
