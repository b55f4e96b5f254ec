"""Splits: deterministic, sized as configured, and leak-free by content and perceptual hash."""

from __future__ import annotations

import json
import random
from itertools import combinations

import pyarrow as pa
import pytest

from oripid.builders import layout
from oripid.builders.ingest import MANIFEST_SCHEMA, read_manifest, write_parquet_atomic
from oripid.builders.origins_dedup import hamming
from oripid.builders.splits import SplitsConfig, split_origins
from oripid.errors import OripidError


def flip(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def write_manifest(workdir, n: int = 200, seed: int = 0) -> list[dict]:
    """A manifest of n accepted origins with random phashes, a few near-duplicate chains that
    ingest's threshold (4) let through, a duplicate and a rejected row."""
    rng = random.Random(seed)
    phashes = [rng.getrandbits(64) for _ in range(n)]
    # Chains: 10 -> 11 at distance 6, 11 -> 12 at distance 6 (10 and 12 may be farther apart).
    phashes[11] = flip(phashes[10], [0, 9, 18, 27, 36, 45])
    phashes[12] = flip(phashes[11], [1, 10, 19, 28, 37, 46])
    phashes[51] = flip(phashes[50], [3, 30, 60, 61, 62])
    rows = []
    for i, value in enumerate(phashes):
        rows.append(
            {"origin_id": f"T{i:06d}", "source": f"{i}.jpg", "sha256": f"{i:064x}", "phash": f"{value:016x}"}
            | {"width": 64, "height": 64, "status": "ok"}
        )
    rows.append(
        {"source": "dup.jpg", "sha256": f"{3:064x}", "status": "duplicate", "duplicate_of": "T000003"}
    )
    rows.append({"source": "bad.jpg", "status": "rejected", "reason": "decode_error"})
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    write_parquet_atomic(table, workdir / layout.ORIGINS_MANIFEST)
    return rows


def splits_of(workdir) -> dict[str, str]:
    return {r["source"]: r["split"] for r in read_manifest(workdir).to_pylist()}


def test_sizes_follow_the_config_and_reruns_are_identical(tmp_path):
    write_manifest(tmp_path)
    summary = split_origins(tmp_path, train=0.5, test=40, distractor=10)
    assert summary.requested == {"test": 40, "distractor": 10, "train": 100}
    counts = summary.counts
    # A group placed whole may overshoot a split by at most its size minus one.
    assert 40 <= counts["test"] <= 42 and 10 <= counts["distractor"] <= 12 and 100 <= counts["train"] <= 102
    assert sum(counts.values()) == 200
    first = splits_of(tmp_path)
    text = (tmp_path / layout.SPLITS_SUMMARY).read_text()
    split_origins(tmp_path, train=0.5, test=40, distractor=10)
    assert splits_of(tmp_path) == first and (tmp_path / layout.SPLITS_SUMMARY).read_text() == text
    split_origins(tmp_path, train=0.5, test=40, distractor=10, key="another key")
    assert splits_of(tmp_path) != first, "the key must change the draw"


def test_rest_and_errors(tmp_path):
    write_manifest(tmp_path)
    summary = split_origins(tmp_path, train="rest", test=0.1)
    assert summary.counts["unused"] == 0 and summary.counts["train"] + summary.counts["test"] == 200
    with pytest.raises(OripidError, match="lower the counts"):
        split_origins(tmp_path)  # OriPID defaults: 100,000 train + 5,000 test
    with pytest.raises(OripidError, match="trian"):
        split_origins(tmp_path, trian=3)
    with pytest.raises(OripidError, match="only one split"):
        split_origins(tmp_path, train="rest", test="rest")
    with pytest.raises(OripidError, match="fraction"):
        split_origins(tmp_path, train=1.5, test=3)


def test_default_test_size_serves_5000_queries_per_model():
    from oripid.builders.splits import resolve_sizes

    assert resolve_sizes(SplitsConfig(train="rest"), 200_000)["test"] == 5000
    assert resolve_sizes(SplitsConfig(train="rest", queries_per_test_origin=4), 200_000)["test"] == 1250


def test_no_leak_across_splits(tmp_path):
    rows = write_manifest(tmp_path)
    summary = split_origins(tmp_path, train="rest", test=60, distractor=60, leak_threshold=8)
    final = {r["origin_id"]: r for r in read_manifest(tmp_path).to_pylist() if r["status"] == "ok"}
    # Brute force over all pairs, independent of the code's banded index.
    for a, b in combinations(final.values(), 2):
        if hamming(int(a["phash"], 16), int(b["phash"], 16)) <= 8 or a["sha256"] == b["sha256"]:
            assert a["split"] == b["split"], (a["origin_id"], b["origin_id"])
    assert final["T000010"]["split"] == final["T000011"]["split"] == final["T000012"]["split"]
    assert ["T000010", "T000011", "T000012"] in summary.leakage["groups"]
    assert summary.leakage["groups_kept_together"] >= 2
    report = json.loads((tmp_path / layout.SPLITS_SUMMARY).read_text())
    assert report["leakage"]["cross_split_pairs"] == 0
    by_source = splits_of(tmp_path)
    assert by_source["dup.jpg"] == final["T000003"]["split"], "duplicates follow their origin"
    assert by_source["bad.jpg"] is None
    assert len(rows) == len(by_source)


def write_assignment(path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        keys = list(rows[0])
        path.write_text(
            ",".join(keys) + "\n" + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in rows)
        )
    else:
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_released_partition_is_reproduced(tmp_path, suffix):
    write_manifest(tmp_path)
    # OriPID-style file names for some origins (by source stem), ids for others; chains kept together.
    rows = [{"file": f"train/{i}.jpg", "split": "train"} for i in range(0, 100)]
    rows += [{"file": f"test/{i}.jpg", "split": "test"} for i in range(100, 150)]
    assignment = tmp_path / f"released{suffix}"
    write_assignment(assignment, rows)
    summary = split_origins(tmp_path, assignment=str(assignment))
    assert summary.counts == {"test": 50, "distractor": 0, "train": 100, "unused": 50}
    assert summary.requested == {} and summary.assignment == str(assignment)
    by_source = splits_of(tmp_path)
    assert (
        by_source["7.jpg"] == "train" and by_source["120.jpg"] == "test" and by_source["170.jpg"] == "unused"
    )
    assert by_source["dup.jpg"] == "train", "duplicates follow their origin (T000003)"
    assert by_source["bad.jpg"] is None
    # The same partition keyed by origin_id gives the same column.
    by_id = tmp_path / "by_id.jsonl"
    write_assignment(by_id, [{"origin_id": f"T{i:06d}", "split": r["split"]} for i, r in enumerate(rows)])
    split_origins(tmp_path, assignment=str(by_id))
    assert splits_of(tmp_path) == by_source


def test_assignment_leaks_are_refused_or_reported(tmp_path):
    write_manifest(tmp_path)
    # T000010 and T000011 are 6 bits apart: putting them in different splits leaks.
    rows = [{"origin_id": f"T{i:06d}", "split": "test" if i == 11 else "train"} for i in range(200)]
    assignment = tmp_path / "leaky.csv"
    write_assignment(assignment, rows)
    with pytest.raises(
        OripidError, match=r"leaky.csv: 2 near-duplicate pairs .*T000010~T000011.*assignment_leaks"
    ):
        split_origins(tmp_path, assignment=str(assignment))
    summary = split_origins(tmp_path, assignment=str(assignment), assignment_leaks="report")
    assert summary.leakage["cross_split_pairs"] == 2
    assert ["T000010", "T000011"] in summary.leakage["cross_split_examples"]
    assert splits_of(tmp_path)["11.jpg"] == "test", "the partition is kept as given"
    # Below the chain's distance nothing leaks.
    assert (
        split_origins(tmp_path, assignment=str(assignment), leak_threshold=5).leakage["cross_split_pairs"]
        == 0
    )


def test_bad_assignments_name_the_file_and_the_fix(tmp_path):
    write_manifest(tmp_path)
    cases = {
        "names.csv": (
            "origin_id,split\nT000001,validation\n",
            r"names.csv: entry 1 \('T000001'\) has split 'validation'; use one of test, distractor, train, unused",
        ),
        "twice.csv": (
            "origin_id,split\nT000001,train\nT000001,test\n",
            r"'T000001' is assigned to both 'train' and 'test'",
        ),
        "nokey.csv": ("picture,split\nT000001,train\n", r"nokey.csv: no key column; name one of origin_id"),
        "nosplit.csv": ("origin_id,part\nT000001,train\n", r"no 'split' column"),
        "other.csv": ("origin_id,split\nX9,train\n", r"names none of the 200 accepted origins"),
        "broken.jsonl": ('{"origin_id": "T000001", "split": "train"}\n{oops\n', r"broken.jsonl:2: not JSON"),
        "table.xlsx": ("", r"a .csv, .tsv, .jsonl or .parquet file"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(OripidError, match=message):
            split_origins(tmp_path, assignment=str(tmp_path / name))
    with pytest.raises(OripidError, match="missing.csv does not exist"):
        split_origins(tmp_path, assignment=str(tmp_path / "missing.csv"))
