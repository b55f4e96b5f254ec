"""The builder: determinism, world-size invariance, crash and resume, failures, loadable shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from oripid.builders import layout
from oripid.builders.build import build
from oripid.builders.generate import Img2ImgRunner, settings_for
from oripid.builders.plan import make_plan, read_plan, write_plan
from oripid.config import load_config
from oripid.errors import OripidError
from oripid.launch import accelerate_command
from oripid.models_registry.loader import load_pipeline
from oripid.models_registry.registry import ORIPID_MODELS, load_registry
from tests.builders.workspace import make_workspace

REPO = Path(__file__).resolve().parents[2]


def _plan(workdir: Path) -> None:
    write_plan(make_plan(load_config(workdir / layout.CONFIG), workdir), workdir)


def _data_files(workdir: Path) -> dict[str, bytes]:
    return {
        p.relative_to(workdir).as_posix(): p.read_bytes()
        for p in sorted((workdir / "data").rglob("*"))
        if p.is_file()
    }


def _run_cli(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, **kwargs)


def test_same_config_twice_gives_identical_bytes(tmp_path):
    built = []
    for name in ("a", "b"):
        workdir = make_workspace(tmp_path / name)
        _plan(workdir)
        build(workdir)
        built.append(_data_files(workdir))
    assert built[0].keys() == built[1].keys()
    assert any(name.endswith(".tar") for name in built[0])
    for name in built[0]:
        assert built[0][name] == built[1][name], name


def test_rebuild_of_finished_workspace_does_nothing(tmp_path):
    workdir = make_workspace(tmp_path / "w")
    _plan(workdir)
    first = build(workdir)
    before = _data_files(workdir)
    second = build(workdir)
    assert first.shards_built == len(read_plan(workdir).shards)
    assert second.shards_built == 0
    assert _data_files(workdir) == before


@pytest.mark.slow
def test_two_processes_give_the_same_files_as_one(tmp_path):
    single = make_workspace(tmp_path / "single")
    _plan(single)
    build(single)

    double = make_workspace(tmp_path / "double")
    _plan(double)
    # `--cpu --num_processes 2` would start one process; --multi_gpu starts two even without a GPU.
    # oripid's launcher: `--multi_gpu` starts two processes even without a GPU (`--cpu` would not).
    result = _run_cli(accelerate_command(["build", "--workdir", str(double)], processes=2), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of world size 2" in result.stderr
    assert "rank 1 of world size 2" in result.stderr
    for rank in (0, 1):
        records = [
            json.loads(line)
            for line in (double / "logs" / f"build-rank{rank}.jsonl").read_text().splitlines()
        ]
        assert records and all(r["world_size"] == 2 and r["rank"] == rank for r in records)
    assert _data_files(single) == _data_files(double)


def _all_keys(workdir: Path) -> list[str]:
    keys = []
    for index in sorted((workdir / "data").rglob("*.parquet")):
        keys += pq.read_table(index, columns=["key"]).column("key").to_pylist()
    return keys


def _planned_keys(workdir: Path) -> list[str]:
    plan = read_plan(workdir)
    return [
        origin_id if shard.model == "origin" else layout.sample_key(origin_id, shard.model, idx)
        for shard in plan.shards
        for origin_id, idx in shard.samples
    ]


@pytest.mark.slow
def test_sigkill_mid_shard_then_rerun_completes_exactly_once(tmp_path):
    workdir = make_workspace(
        tmp_path / "w",
        splits={"train": 4, "test": 2, "distractor": 1},
        prompts_per_origin=4,
        config={"shards": {"max_samples": 8}, "build": {"variant": "tiny", "batch_size": 1}},
    )
    _plan(workdir)
    process = subprocess.Popen(
        [sys.executable, "-m", "oripid", "build", "--workdir", str(workdir)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    partial = None
    while time.monotonic() < deadline and process.poll() is None:
        partials = list((workdir / "data").rglob("*.partial")) if (workdir / "data").exists() else []
        done = list((workdir / "data").rglob("*.json")) if (workdir / "data").exists() else []
        if partials and done:  # at least one shard finished, one in the middle
            partial = partials[0]
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial is not None, "the build finished before it could be killed mid-shard"
    assert list((workdir / "data").rglob("*.partial")), "the kill left no partial shard to recover"

    build(workdir)
    keys = _all_keys(workdir)
    assert sorted(keys) == sorted(_planned_keys(workdir))
    assert len(keys) == len(set(keys))
    assert not list((workdir / "data").rglob("*.partial"))


def test_one_build_covers_all_seven_models_with_settings_in_each_json(tmp_path):
    import webdataset as wds

    workdir = make_workspace(
        tmp_path / "w",
        splits={"train": 1, "test": 2, "distractor": 1},
        prompts_per_origin=2,
        config={
            "generate": {
                "train": {"models": ["sd2"], "prompts_per_origin": 2},
                "query": {"models": list(ORIPID_MODELS), "prompts_per_origin": 1},
            },
            "models": {"sdxl": {"strength": 0.5, "guidance_scale": 3.0}},
        },
    )
    _plan(workdir)
    build(workdir)
    registry = load_registry()
    seen = set()
    for model in ORIPID_MODELS:
        shards = sorted(str(p) for p in (workdir / "data" / "query" / model).glob("*.tar"))
        assert shards, model
        for sample in wds.WebDataset(shards, shardshuffle=False):
            meta = json.loads(sample["json"])
            entry = registry.get(model)
            assert meta["model"] == model and meta["pipeline"] == entry.pipeline
            expected_strength = 0.5 if model == "sdxl" else entry.defaults.strength
            expected_guidance = 3.0 if model == "sdxl" else entry.defaults.guidance_scale
            assert meta["strength"] == expected_strength
            assert meta["guidance_scale"] == expected_guidance
            assert meta["num_inference_steps"] == 2
            assert (meta["width"], meta["height"]) == (entry.tiny.resolution,) * 2
            assert meta["revision"] == "tiny" and meta["seed"] >= 0 and meta["prompt"]
            import hashlib

            assert hashlib.sha256(sample["jpg"]).hexdigest() == meta["sha256"]
            seen.add(model)
    assert seen == set(ORIPID_MODELS)


def test_shards_load_with_webdataset_and_datasets(tmp_path):
    import datasets
    import webdataset as wds

    workdir = make_workspace(tmp_path / "w")
    _plan(workdir)
    build(workdir)
    plan = read_plan(workdir)
    for split, model in {(s.split, s.model) for s in plan.shards}:
        planned = sum(len(s.samples) for s in plan.shards if (s.split, s.model) == (split, model))
        tars = sorted(str(p) for p in layout.shard_dir(workdir, split, model).glob("*.tar"))
        assert sum(1 for _ in wds.WebDataset(tars, shardshuffle=False)) == planned
        loaded = datasets.load_dataset(
            "webdataset", data_files={"x": tars}, split="x", cache_dir=str(tmp_path / "hf_cache")
        )
        assert len(loaded) == planned
        assert loaded[0]["jpg"].size[0] > 0


def test_failures_are_recorded_with_reasons_never_dropped(tmp_path):
    workdir = make_workspace(tmp_path / "w", splits={"train": 2, "test": 1, "distractor": 1})
    _plan(workdir)
    # A missing origin image: every sample of that origin is recorded as a failure.
    layout.origin_image_path(workdir, "T000001").unlink()
    build(workdir)
    failures = []
    for stats in (workdir / "data").rglob("*.json"):
        data = json.loads(stats.read_text())
        assert data["written"] + data["failed"] == data["planned"]
        failures += data["failures"]
    assert failures and all(f["origin_id"] == "T000001" for f in failures)
    assert all(f["reason"].startswith("origin_unreadable") for f in failures)
    # train: 2 prompts of T000001 + its train_origins entry
    assert len(failures) == 3


class _FlakyPipeline:
    """Wraps a real pipeline: out of memory above one image per call; NaN for one prompt."""

    def __init__(self, pipeline, nan_prompt: str | None = None, nan_always: bool = False):
        self.pipeline, self.nan_prompt, self.nan_always = pipeline, nan_prompt, nan_always
        self.calls: list[int] = []
        self.device = pipeline.device

    def __call__(self, prompt, **kwargs):
        self.calls.append(len(prompt))
        if len(prompt) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        output = self.pipeline(prompt=prompt, **kwargs)
        if prompt[0] == self.nan_prompt and (self.nan_always or len(self.calls) <= 2):
            output.images[:] = np.nan
        return output


def test_runner_halves_batch_on_oom_and_retries_nan(tmp_path):
    from PIL import Image

    registry = load_registry()
    entry = registry.get("sd2")
    pipeline = load_pipeline(entry, "tiny", device="cpu")
    image = Image.new("RGB", (64, 64), (120, 30, 200))
    settings = settings_for(entry, None, 64)
    flaky = _FlakyPipeline(pipeline, nan_prompt="b")
    runner = Img2ImgRunner(flaky, entry, settings)
    results = runner.generate([image] * 3, ["a", "b", "c"], [1, 2, 3])
    assert [r.failure for r in results] == [None, None, None]  # NaN on "b" cleared by the retry
    assert flaky.calls[:3] == [3, 1, 2]

    always_nan = _FlakyPipeline(pipeline, nan_prompt="b", nan_always=True)
    results = Img2ImgRunner(always_nan, entry, settings).generate([image] * 2, ["a", "b"], [1, 2])
    assert results[0].failure is None and results[1].failure == "nonfinite_output"

    results = Img2ImgRunner(_FlakyPipeline(pipeline), entry, settings, min_batch_size=2).generate(
        [image] * 2, ["a", "b"], [1, 2]
    )
    assert [r.failure for r in results] == ["out_of_memory", "out_of_memory"]


def test_stale_plan_and_bad_config_are_refused(tmp_path):
    workdir = make_workspace(tmp_path / "w")
    _plan(workdir)
    config_path = workdir / layout.CONFIG
    config_path.write_text(config_path.read_text() + "image: {format: png}\n")
    with pytest.raises(OripidError, match="rerun `oripid plan"):
        build(workdir)
    config_path.write_text(config_path.read_text().replace("batch_size: 2", "batch_size: 0"))
    with pytest.raises(OripidError, match="build.batch_size"):
        load_config(config_path)


def test_cli_init_plan_build_status(tmp_path):
    workdir = make_workspace(tmp_path / "w")
    result = _run_cli([sys.executable, "-m", "oripid", "init", "--workdir", str(workdir)])
    assert result.returncode == 2 and "exists; pass --force" in result.stderr
    assert _run_cli([sys.executable, "-m", "oripid", "plan", "--workdir", str(workdir)]).returncode == 0
    result = _run_cli([sys.executable, "-m", "oripid", "status", "--workdir", str(workdir)])
    assert result.returncode == 0 and "shards_pending" in result.stdout
    result = _run_cli([sys.executable, "-m", "oripid", "build", "--workdir", str(workdir)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rank 0 of world size 1" in result.stderr
    status = _run_cli([sys.executable, "-m", "oripid", "status", "--workdir", str(workdir)]).stdout
    lines = [line.split() for line in status.splitlines()[1:]]
    assert lines and all(line[3] == "0" for line in lines)  # nothing pending


def test_changed_model_settings_rebuild_only_that_models_shards(tmp_path):
    workdir = make_workspace(tmp_path / "w")
    _plan(workdir)
    build(workdir)
    before = _data_files(workdir)
    config_path = workdir / layout.CONFIG
    config_path.write_text(
        config_path.read_text().replace(
            "sd2:\n    num_inference_steps: 2", "sd2:\n    num_inference_steps: 3"
        )
    )
    with pytest.raises(OripidError, match="rerun `oripid plan"):
        build(workdir)
    _plan(workdir)
    summary = build(workdir)
    after = _data_files(workdir)
    changed = {name for name in after if after[name] != before[name]}
    assert summary.shards_built == len([s for s in read_plan(workdir).shards if s.model == "sd2"])
    assert changed and all("/sd2/" in name for name in changed)
    for stats in (workdir / "data").rglob("*sd2*.json"):
        assert json.loads(stats.read_text())["settings"]["num_inference_steps"] == 3


def test_steps_times_strength_below_one_is_refused_at_plan_time(tmp_path):
    workdir = make_workspace(
        tmp_path / "w", config={"models": {"sd2": {"num_inference_steps": 2, "strength": 0.3}}}
    )
    with pytest.raises(OripidError, match=r"models.sd2: num_inference_steps 2 x strength 0.3 .* at least 4"):
        _plan(workdir)


def test_a_model_listed_twice_is_refused(tmp_path):
    with pytest.raises(OripidError, match=r"generate.query.models.*listed more than once"):
        make_workspace(
            tmp_path / "w",
            config={"generate": {"query": {"models": ["sd2", "sd2"], "prompts_per_origin": 1}}},
        )
        load_config(tmp_path / "w" / layout.CONFIG)


def test_an_edited_registry_entry_makes_the_plan_stale_and_batch_size_does_not_rebuild(tmp_path):
    workdir = make_workspace(tmp_path / "w")
    _plan(workdir)
    build(workdir)
    (workdir / "models").mkdir()
    (workdir / "models" / "sdxl.yaml").write_text("extends: sdxl\ndefaults: {guidance_scale: 2.0}\n")
    with pytest.raises(OripidError, match="another config or registry entry"):
        build(workdir)
    _plan(workdir)
    rebuilt = build(workdir)
    assert rebuilt.shards_built == len([s for s in read_plan(workdir).shards if s.model == "sdxl"])

    # Execution settings (batch size, retries) do not decide pixels: nothing is rebuilt.
    config_path = workdir / layout.CONFIG
    config_path.write_text(config_path.read_text().replace("batch_size: 2", "batch_size: 1"))
    _plan(workdir)
    assert build(workdir).shards_built == 0
