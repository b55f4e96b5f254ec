"""The README's demo command, exactly as the README spells it, and what it publishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = ["sd2", "sdxl", "opendalle", "colorfulxl", "kandinsky3", "sd3", "kolors"]


def test_readme_names_the_demo_and_test_commands():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow
def test_make_demo_runs_the_whole_pipeline_and_resumes(tmp_path):
    import datasets
    import webdataset as wds

    workdir = tmp_path / "demo"
    venv = Path(sys.prefix)
    (venv / "bin" / ".oripid-installed").touch()  # this environment is the project's: skip the install
    env = {**os.environ, "VENV": str(venv), "DEMO_WORKDIR": str(workdir)}
    first = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    assert "rank 0 of world size 2" in first.stderr and "rank 1 of world size 2" in first.stderr
    for expected in ("release:", "report:", "contact_all_models.png", "unseen (mean of 6)"):
        assert expected in first.stdout

    report = json.loads((workdir / "validation" / "report.json").read_text())
    assert report["passed"]
    release = workdir / "release"
    for model in MODELS:
        loaded = datasets.load_dataset(str(release), model, split="query", cache_dir=str(tmp_path / "cache"))
        assert len(loaded) == 4 and loaded[0]["json"]["model"] == model
    tars = sorted(str(p) for p in (release / "data").rglob("*.tar"))
    assert sum(1 for _ in wds.WebDataset(tars, shardshuffle=False)) == 58

    # A rerun resumes: nothing is rebuilt and the validation of the same shards is kept.
    second = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "rank 0 of world size" not in second.stderr  # no process was started to find no work
    assert (
        "build 0 of 12 shards (58 samples)" in second.stdout and "VAE features of 0 shards" in second.stdout
    )
    assert json.loads((workdir / "validation" / "report.json").read_text())["seconds"] == report["seconds"]
