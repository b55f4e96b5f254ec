"""Transformers source with tiny random-weight models saved to a folder and loaded back offline."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from oripid.builders import layout
from oripid.errors import OripidError
from oripid.prompts.base import parse_prompt_lines
from oripid.prompts.generate import generate_prompts
from tests.prompts.prompts_tiny_models import save_tiny_captioner, save_tiny_writer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return save_tiny_captioner(root / "captioner"), save_tiny_writer(root / "writer")


def test_parse_prompt_lines():
    assert parse_prompt_lines('{"prompts": ["a", " b ", ""]}') == ["a", "b"]
    assert parse_prompt_lines('["x", "y"]') == ["x", "y"]
    text = '1. oil painting\n2) snowy night\n- neon city\n\n* "foggy harbour"\n(5) pixel art'
    assert parse_prompt_lines(text) == [
        "oil painting",
        "snowy night",
        "neon city",
        "foggy harbour",
        "pixel art",
    ]


def test_caption_then_write_in_batches(workspace, tiny):
    captioner, writer = tiny
    config = {
        "model_path": str(writer),
        "captioner_path": str(captioner),
        "batch_size": 3,
        "max_new_tokens": 48,
    }
    config |= {"rounds": 8}
    summary = generate_prompts(
        workspace, source="transformers", per_origin=3, transformers=config, on_short="keep"
    )
    stats = summary.source_stats
    assert stats["device"] == "cpu" and stats["batches"] == 2  # 4 origins in batches of 3
    assert stats["mode"] == "caption+write"
    rows = pq.read_table(workspace / layout.PROMPTS_TABLE).to_pylist()
    assert summary.prompts == len(rows) >= 9, summary.checks
    for origin in {r["origin_id"] for r in rows}:
        mine = [r["prompt"] for r in rows if r["origin_id"] == origin]
        assert len(mine) == len(set(mine)) and all(mine)
    # Same seed, same models: the same prompts.
    first = (workspace / layout.PROMPTS_TABLE).read_bytes()
    generate_prompts(workspace, source="transformers", per_origin=3, transformers=config, on_short="keep")
    assert (workspace / layout.PROMPTS_TABLE).read_bytes() == first


def test_one_vlm_sees_the_origin_and_writes(workspace, tiny):
    captioner, _ = tiny
    config = {"model_path": str(captioner), "batch_size": 4, "max_new_tokens": 24, "rounds": 2}
    summary = generate_prompts(
        workspace, source="transformers", per_origin=2, transformers=config, on_short="keep"
    )
    assert summary.source_stats["mode"] == "vlm" and summary.source_stats["batches"] == 1
    assert summary.checks["generated"] > 0
    rows = pq.read_table(workspace / layout.PROMPTS_TABLE).to_pylist()
    assert all(r["prompt"].strip() for r in rows)


def test_missing_or_wrong_models_fail_at_construction(workspace, tiny, tmp_path):
    captioner, writer = tiny
    with pytest.raises(OripidError, match="needs transformers.model_path"):
        generate_prompts(workspace, source="transformers")
    with pytest.raises(OripidError, match="not a local model folder"):
        generate_prompts(
            workspace, source="transformers", transformers={"model_path": str(tmp_path / "nope")}
        )
    with pytest.raises(OripidError, match="text-only model"):
        generate_prompts(workspace, source="transformers", transformers={"model_path": str(writer)})
    with pytest.raises(OripidError, match="not an image-text-to-text"):
        generate_prompts(
            workspace,
            source="transformers",
            transformers={"model_path": str(writer), "captioner_path": str(writer)},
        )
