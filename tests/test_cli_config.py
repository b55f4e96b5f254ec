"""The stage commands read their section of the workspace's oripid.yaml; flags override it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from oripid.demo import sample_origins_dir

REPO = Path(__file__).resolve().parents[1]


def _oripid(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "oripid", *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_ingest_prompts_and_splits_take_their_config_sections(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "oripid.yaml").write_text(
        "origins: {id_pattern: 'X{index:03d}'}\n"
        "prompts: {source: template, per_origin: 3}\n"
        "splits: {train: 4, test: 3, distractor: rest, test_queries_per_model: 3}\n"
    )
    _oripid("origins", "ingest", str(sample_origins_dir()), "--workdir", str(workdir), "--no-progress")
    manifest = pq.read_table(workdir / "origins" / "manifest.parquet").to_pylist()
    assert all(row["origin_id"].startswith("X") for row in manifest if row["status"] == "ok")

    _oripid("prompts", "generate", "--workdir", str(workdir))
    prompts = pq.read_table(workdir / "prompts" / "prompts.parquet").to_pylist()
    per_origin = {row["origin_id"]: 0 for row in prompts}
    for row in prompts:
        per_origin[row["origin_id"]] += 1
    assert set(per_origin.values()) == {3}

    _oripid("prompts", "generate", "--workdir", str(workdir), "--per-origin", "2")  # a flag wins
    assert len(pq.read_table(workdir / "prompts" / "prompts.parquet")) == 2 * len(per_origin)

    _oripid("splits", "--workdir", str(workdir))
    splits = [
        row["split"]
        for row in pq.read_table(workdir / "origins" / "manifest.parquet").to_pylist()
        if row["status"] == "ok"
    ]
    assert splits.count("train") == 4 and splits.count("test") == 3

    # A released partition by file name, from the command line.
    released = tmp_path / "released.csv"
    sources = [r["source"] for r in manifest if r["status"] == "ok"]
    released.write_text("file,split\n" + "".join(f"photos/{s},train\n" for s in sources[:2]))
    _oripid("splits", "--workdir", str(workdir), "--assignment", str(released))
    rows = pq.read_table(workdir / "origins" / "manifest.parquet").to_pylist()
    assert sorted(r["split"] for r in rows if r["status"] == "ok") == ["train", "train"] + ["unused"] * (
        len(sources) - 2
    )
