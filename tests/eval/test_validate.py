"""`oripid validate` passes a clean tiny build and catches each kind of damage with a clear message."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oripid.builders import layout
from oripid.builders.build import build
from oripid.builders.plan import make_plan, write_plan
from oripid.config import load_config
from oripid.eval.validate import read_report, validate
from tests.builders.workspace import make_workspace

VALIDATION = {
    "robustness_queries_per_model": 2,
    "blur_radii": [2.0],
    "jpeg_qualities": [50],
    "thresholds": {"min_map_seen": None, "min_map_unseen": None, "min_gain_over_identity": None},
}


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory, tiny_cache):
    import os

    os.environ["ORIPID_TINY_CACHE"] = str(tiny_cache)
    workdir = make_workspace(
        tmp_path_factory.mktemp("clean") / "w",
        splits={"train": 3, "test": 3, "distractor": 2},
        config={"validation": VALIDATION},
    )
    write_plan(make_plan(load_config(workdir / layout.CONFIG), workdir), workdir)
    build(workdir)
    return workdir


@pytest.fixture
def workdir(clean_build, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(clean_build, copy)
    return copy


def _first_tar(workdir, split="query", model="sd2"):
    return sorted(layout.shard_dir(workdir, split, model).glob("*.tar"))[0]


def _rewrite_tar(path, change):
    """Rewrite a shard's members through `change(name, data) -> [(name, data), ...]`."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    out = []
    for name, data in members:
        out += change(name, data)
    path.chmod(0o644)
    with tarfile.open(path, "w") as tar:
        for name, data in out:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_clean_build_passes_and_records_the_digest(workdir):
    report = validate(workdir)
    assert report["passed"], json.dumps({k: v.get("messages") for k, v in report["checks"].items()})
    assert report["digest"] == layout.shard_index_digest(workdir)
    assert read_report(workdir)["passed"]
    evaluation = report["checks"]["reference_eval"]
    assert [row["model"] for row in evaluation["tables"]["learned_w"]][:2] == ["sd2", "sdxl"]
    assert evaluation["feature_dim"] == 4096  # 4 x 32 x 32 latents, as SD2's VAE at 256 px
    assert {row["perturbation"] for row in evaluation["robustness"]} == {"blur_r2", "jpeg_q50"}
    for plot in report["plots"]:
        assert (workdir / "validation" / plot).stat().st_size > 0
    assert "# Validation: PASSED" in (workdir / "validation" / "report.md").read_text()


def test_deleted_sample_is_caught(workdir):
    tar = _first_tar(workdir)
    victim = None

    def drop_first(name, data):
        nonlocal victim
        key = name.partition(".")[0]
        victim = victim or key
        return [] if key == victim else [(name, data)]

    _rewrite_tar(tar, drop_first)
    report = validate(workdir)
    integrity = report["checks"]["integrity"]
    assert not report["passed"] and integrity["counts"]["missing"] == 1
    assert victim in integrity["examples"]["missing"]
    assert any("missing" in m and victim in m for m in integrity["messages"])


def test_corrupted_image_is_caught(workdir):
    tar = _first_tar(workdir)
    _rewrite_tar(tar, lambda name, data: [(name, data[:40] if name.endswith(".jpg") else data)])
    integrity = validate(workdir)["checks"]["integrity"]
    assert not integrity["passed"] and integrity["counts"]["undecodable"] >= 1
    assert any("undecodable" in m for m in integrity["messages"])


def test_duplicated_key_is_caught(workdir):
    tar = _first_tar(workdir)
    with tarfile.open(tar) as t:
        first = next(m for m in t if m.isfile()).name.partition(".")[0]
    target = sorted(layout.shard_dir(workdir, "train", "sd2").glob("*.tar"))[0]
    with tarfile.open(tar) as t:
        extra = [(m.name, t.extractfile(m).read()) for m in t if m.name.startswith(first + ".")]
    _rewrite_tar(target, lambda name, data: [(name, data)])
    with tarfile.open(target, "a") as t:
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    integrity = validate(workdir)["checks"]["integrity"]
    assert not integrity["passed"] and first in integrity["examples"]["duplicated"]


def test_train_test_leak_is_caught(workdir):
    manifest_path = workdir / layout.ORIGINS_MANIFEST
    rows = pq.read_table(manifest_path).to_pylist()
    test_row = next(r for r in rows if r["split"] == "test")
    train_row = next(r for r in rows if r["split"] == "train")
    train_row["sha256"] = test_row["sha256"]  # the same picture on both sides
    pq.write_table(pa.Table.from_pylist(rows), manifest_path)
    leakage = validate(workdir)["checks"]["leakage"]
    assert not leakage["passed"] and leakage["shared_hashes"] == 1
    assert any("content hashes in both train and test" in m for m in leakage["messages"])


def test_a_shard_changed_after_validation_makes_the_report_stale(workdir):
    from oripid.builders.publish import check_validation
    from oripid.errors import OripidError

    assert validate(workdir)["passed"]
    check_validation(workdir)
    tar = _first_tar(workdir)
    tar.chmod(0o644)
    with tarfile.open(tar, "a") as t:  # a sample slipped in after validation, index untouched
        info = tarfile.TarInfo("intruder.jpg")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(OripidError, match="stale"):
        check_validation(workdir)


def test_files_of_shards_the_plan_no_longer_holds_are_caught(workdir):
    stray = layout.shard_dir(workdir, "query", "sd3") / "query-sd3-000000.tar"
    stray.parent.mkdir(parents=True)
    shutil.copy(_first_tar(workdir), stray)
    integrity = validate(workdir)["checks"]["integrity"]
    assert not integrity["passed"]
    assert integrity["examples"]["unplanned_files"] == ["data/query/sd3/query-sd3-000000.tar"]
