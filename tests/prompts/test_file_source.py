"""File source: JSONL, CSV and parquet keyed by origin id or by file name (OriPID's route)."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oripid.builders import layout
from oripid.builders.ingest import read_manifest
from oripid.errors import OripidError
from oripid.prompts.generate import PROMPTS_REPORT, generate_prompts


def released_prompts(workspace) -> list[dict]:
    """Three prompts per origin keyed by file name, as OriPID's release keys them, plus a stray key."""
    rows = []
    for origin in read_manifest(workspace).to_pylist():
        if origin["status"] == "ok":
            for i in reversed(range(3)):  # out of order on purpose: prompt_idx decides
                rows.append(
                    {"file_name": origin["source"], "prompt_idx": i, "prompt": f"{origin['source']} edit {i}"}
                )
    rows.append({"file_name": "not_ingested.jpg", "prompt_idx": 0, "prompt": "orphan"})
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_every_format_reads_the_same_prompts(workspace, fmt):
    rows = released_prompts(workspace)
    path = workspace / f"released.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    summary = generate_prompts(workspace, source="file", per_origin=3, file={"path": str(path)})
    assert summary.prompts == 12 and summary.source_stats["unmatched_keys"] == 1
    manifest = {
        r["origin_id"]: r["source"] for r in read_manifest(workspace).to_pylist() if r["status"] == "ok"
    }
    for row in pq.read_table(workspace / layout.PROMPTS_TABLE).to_pylist():
        assert row["prompt"] == f"{manifest[row['origin_id']]} edit {row['prompt_idx']}"
        assert row["source"] == "file"


def test_too_few_prompts_fail_with_a_report_unless_kept(workspace):
    path = workspace / "few.jsonl"
    manifest = [r for r in read_manifest(workspace).to_pylist() if r["status"] == "ok"]
    lines = [{"origin_id": r["origin_id"], "prompt": p} for r in manifest for p in ("snowy", "snowy", "")]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(OripidError, match="fewer than 2 valid prompts"):
        generate_prompts(workspace, source="file", per_origin=2, file={"path": str(path)})
    report = json.loads((workspace / PROMPTS_REPORT).read_text())
    assert report["checks"]["dropped"] == {"duplicate": 4, "empty": 4} and report["short_origins"] == 4
    assert not (workspace / layout.PROMPTS_TABLE).exists(), "a failed run leaves no table behind"
    summary = generate_prompts(
        workspace, source="file", per_origin=2, file={"path": str(path)}, on_short="keep"
    )
    assert summary.prompts == 4


def test_user_errors(workspace):
    with pytest.raises(OripidError, match="needs file.path"):
        generate_prompts(workspace, source="file")
    with pytest.raises(OripidError, match="does not exist"):
        generate_prompts(workspace, source="file", file={"path": str(workspace / "nope.jsonl")})
    bad = workspace / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(OripidError, match="lack a key and prompt column"):
        generate_prompts(workspace, source="file", file={"path": str(bad)})
    with pytest.raises(OripidError, match="per_origin"):
        generate_prompts(workspace, per_origin=0)
