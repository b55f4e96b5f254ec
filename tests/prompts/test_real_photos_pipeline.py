"""A real offline set: the colour photos shipped inside scikit-image, scikit-learn and matplotlib
go through `oripid origins ingest`, `oripid prompts generate` and `oripid splits` (the CLI)."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq

from oripid.builders import layout
from oripid.builders.ingest import read_manifest
from oripid.builders.origins_samples import package_photos, sample_origins_dir
from oripid.cli import main


def test_package_photos_through_the_cli(tmp_path, capsys):
    photos = package_photos()
    assert {"astronaut", "chelsea", "china", "flower", "grace_hopper"} <= set(photos), photos
    src = tmp_path / "photos"
    src.mkdir()
    for name, path in photos.items():
        shutil.copy(path, src / f"{name}{path.suffix}")
    work = tmp_path / "work"

    assert main(["origins", "ingest", str(src), "--workdir", str(work), "--no-progress"]) == 0
    ingest = json.loads(capsys.readouterr().out)
    assert ingest["ok"] == len(photos) and ingest["rejected"] == ingest["duplicate"] == 0

    assert (
        main(["prompts", "generate", "--workdir", str(work), "--per-origin", "20", "--source", "template"])
        == 0
    )
    prompts = json.loads(capsys.readouterr().out)
    assert prompts["prompts"] == 20 * len(photos) and prompts["short_origins"] == 0

    args = ["splits", "--workdir", str(work), "--train", "rest", "--test", "3", "--distractor", "2"]
    assert main(args) == 0
    splits = json.loads(capsys.readouterr().out)
    assert splits["counts"] == {"test": 3, "distractor": 2, "train": len(photos) - 5, "unused": 0}
    manifest = read_manifest(work).to_pylist()
    assert all(r["split"] in ("train", "test", "distractor") for r in manifest)
    table = pq.read_table(work / layout.PROMPTS_TABLE)
    assert set(table.column("origin_id").to_pylist()) == {r["origin_id"] for r in manifest}
    assert (work / layout.SPLITS_SUMMARY).is_file()


def test_shipped_demo_origins_all_ingest(tmp_path):
    from oripid.builders.ingest import ingest_origins

    summary = ingest_origins(sample_origins_dir(), tmp_path / "w", progress=False, workers=1)
    jpegs = sorted(sample_origins_dir().glob("*.jpg"))
    assert 10 <= len(jpegs) <= 14 and summary.ok == len(jpegs)
    # LICENSES.md is in the folder too: recorded, not silently skipped.
    assert summary.rejected == 1 and summary.reasons == {"not_an_image": 1}
    licences = (sample_origins_dir() / "LICENSES.md").read_text()
    assert all(f"| {path.name} |" in licences for path in jpegs)


def test_cli_user_error_exit_code(tmp_path, capsys):
    assert main(["splits", "--workdir", str(tmp_path)]) == 2
    assert "oripid origins ingest" in capsys.readouterr().err
