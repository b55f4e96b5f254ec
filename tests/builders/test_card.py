"""The dataset card rendered from a fake-but-valid workspace (real shards, real report)."""

from __future__ import annotations

import glob
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard

from oripid.builders import layout
from oripid.builders.card import render_card, render_metrics
from oripid.cli import main
from oripid.errors import OripidError
from tests.release_fixture import MODEL_SETTINGS, write_release_workspace

MODELS = ("sd2", "sdxl", "opendalle", "sd3", "kolors")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    info = write_release_workspace(tmp_path_factory.mktemp("card") / "ws", models=MODELS)
    render_card(workdir=info["workdir"], repo_id="alice/oripid-tiny")
    return info


def _card(info) -> DatasetCard:
    return DatasetCard((info["workdir"] / layout.CARD).read_text())


def test_yaml_parses_with_hub_metadata(workspace):
    data = _card(workspace).data.to_dict()
    assert data["pretty_name"]
    assert data["task_categories"] == ["image-feature-extraction", "image-to-image"]
    assert data["size_categories"] == ["n<1K"]
    # Mixed licences: every Hub id of the models present, plus `other` with its explanation link.
    assert data["license"] == ["cc-by-nc-nd-4.0", "openrail++", "other"]
    assert data["license_name"] and data["license_link"]
    assert "origin-identification" in data["tags"]


def test_every_config_glob_matches_files_and_every_shard_is_covered(workspace):
    workdir = workspace["workdir"]
    configs = {c["config_name"]: c for c in _card(workspace).data.to_dict()["configs"]}
    assert set(configs) == {"all", *MODELS, "gallery", "train_origins"}
    assert configs["all"]["default"] is True
    assert [f["split"] for f in configs["sd2"]["data_files"]] == ["train", "query"]
    assert [f["split"] for f in configs["sdxl"]["data_files"]] == ["query"]
    covered = set()
    for config in configs.values():
        for entry in config["data_files"]:
            paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            for pattern in paths:
                matched = glob.glob(str(workdir / pattern))
                assert matched, f"{config['config_name']}: {pattern} matches nothing"
                covered.update(matched)
    assert covered == {str(p) for p in workdir.glob("data/*/*/*.tar")}


def test_card_states_counts_settings_failures_validation_and_licences(workspace):
    text = (workspace["workdir"] / layout.CARD).read_text()
    body = text.split("---", 2)[2]
    for (split, model), n in workspace["written"].items():
        failed = workspace["failed"][(split, model)]
        assert f"| {split} | {model} | " in body
        row = next(line for line in body.splitlines() if line.startswith(f"| {split} | {model} | "))
        assert f"| {n} |" in row and f"| {failed} |" in row
    for model in MODELS:
        settings = MODEL_SETTINGS[model]
        row = next(
            line for line in body.splitlines() if line.startswith(f"| {model} | {settings['checkpoint']}")
        )
        for key in ("revision", "pipeline", "scheduler", "dtype"):
            assert str(settings[key]) in row
        assert (
            f"{settings['width']}x{settings['height']}" in row
        )  # the asked resolution, not the 16 px stored
        assert f"| {settings['strength']:.4g} |" in row
    assert "nan_image: 1" in body
    assert "| templates | " in body and "| file:prompts.txt | " in body
    assert "**passed**" in body and "stale" not in body
    assert "| sdxl | 0.801 | 0.75 | 0.78 |" in body  # the metrics table, rendered from report.json
    assert "![map_per_model](validation/map_per_model.png)" in body
    assert "Stability AI Community License" in body and "CC BY-NC-ND 4.0" in body and "Kolors" in body
    assert "@inproceedings{wang2025origin" in body and "2501.02376" in body
    assert 'load_dataset("alice/oripid-tiny", "sdxl", split="query")' in body
    assert "misinformation" in body and "copyright" in body
    assert "{{" not in text


def test_stale_validation_is_marked_in_the_card(tmp_path):
    info = write_release_workspace(tmp_path / "ws", models=("sd2",))
    report_path = info["workdir"] / "validation/report.json"
    report = json.loads(report_path.read_text())
    report["digest"] = "0" * 64
    report_path.write_text(json.dumps(report))
    text = render_card(workdir=info["workdir"]).read_text()
    assert "**stale**" in text


@pytest.mark.parametrize(
    "config,splits", [("sdxl", {"query"}), ("sd2", {"train", "query"}), ("gallery", {"gallery"})]
)
def test_configs_load_with_datasets_from_the_local_release(workspace, tmp_path, config, splits):
    from datasets import load_dataset

    dsd = load_dataset(str(workspace["workdir"]), config, cache_dir=str(tmp_path / "cache"))
    assert set(dsd) == splits
    for split in splits:
        model = "origin" if config == "gallery" else config
        assert dsd[split].num_rows == workspace["written"][(split, model)]
        row = dsd[split][0]
        assert row["jpg"].size == (16, 16)
        assert row["json"]["origin_id"] in row["__key__"]


def test_every_model_config_and_all_load_locally(workspace, tmp_path):
    from datasets import load_dataset

    for model in MODELS:
        queries = load_dataset(str(workspace["workdir"]), model, split="query", cache_dir=str(tmp_path / "c"))
        assert set(queries["json"][i]["model"] for i in range(queries.num_rows)) == {model}
    everything = load_dataset(str(workspace["workdir"]), "all", cache_dir=str(tmp_path / "c"))
    expected = sum(n for (split, _), n in workspace["written"].items() if split == "query")
    assert everything["query"].num_rows == expected


def test_render_metrics_handles_any_shape():
    text = render_metrics(
        {
            "overall": 0.5,
            "per_model": [{"model": "sd2", "mAP": 0.9}, {"model": "sdxl", "mAP": 0.8, "acc": 0.7}],
            "nested": {"a": {"b": {"c": 1}}},
            "odd": {1, 2},
            "pipes": "a|b",
        }
    )
    assert "| overall | 0.5 |" in text
    assert "| sdxl | 0.8 | 0.7 |" in text and "| sd2 | 0.9 |  |" in text
    assert "| c | 1 |" in text
    assert "a\\|b" in text
    assert "{1, 2}" in text


def test_refuses_a_workspace_without_shards_or_with_an_unfinished_shard(tmp_path):
    with pytest.raises(OripidError, match="oripid build"):
        render_card(workdir=tmp_path)
    info = write_release_workspace(tmp_path / "ws", models=("sd2",))
    layout.shard_paths(info["workdir"], "query", "sd2", 1)["stats"].unlink()
    with pytest.raises(OripidError, match="did not finish.*oripid build"):
        render_card(workdir=info["workdir"])


def test_a_registry_licence_in_the_settings_wins(tmp_path):
    info = write_release_workspace(tmp_path / "ws", models=("sd2",))
    stats_path = layout.shard_paths(info["workdir"], "query", "sd2", 0)["stats"]
    stats = json.loads(stats_path.read_text())
    stats["settings"]["licence"] = "mit"
    stats_path.write_text(json.dumps(stats))
    meta = yaml.safe_load(render_card(workdir=info["workdir"]).read_text().split("---")[1])
    assert "mit" in meta["license"]


def test_mixed_image_types_get_no_all_config(tmp_path):
    info = write_release_workspace(tmp_path / "ws", models=("sd2", "sdxl"))
    index = layout.shard_paths(info["workdir"], "query", "sdxl", 0)["index"]
    table = pq.read_table(index)
    table = table.set_column(
        table.schema.get_field_index("image_ext"), "image_ext", pa.array(["png"] * len(table))
    )
    pq.write_table(table, index)
    meta = yaml.safe_load(render_card(workdir=info["workdir"]).read_text().split("---")[1])
    names = [c["config_name"] for c in meta["configs"]]
    assert "all" not in names and meta["configs"][0].get("default") is True


def test_cli_card(tmp_path, capsys):
    info = write_release_workspace(tmp_path / "ws", models=("sd2",))
    assert main(["card", "--workdir", str(info["workdir"])]) == 0
    assert (info["workdir"] / "README.md").exists()
    assert "README.md" in capsys.readouterr().out
    assert main(["card", "--workdir", str(tmp_path / "empty")]) == 2


def test_test_builds_are_flagged_and_missing_prompt_sources_said(tmp_path):
    info = write_release_workspace(tmp_path / "ws", models=("sd2",))
    workdir = info["workdir"]
    for stats_path in workdir.glob("data/*/sd2/*.json"):
        stats = json.loads(stats_path.read_text())
        stats["settings"].update(variant="tiny", checkpoint="tiny:sd2")
        stats_path.write_text(json.dumps(stats))
    prompts = pq.read_table(workdir / layout.PROMPTS_TABLE).drop_columns(["source"])
    pq.write_table(prompts, workdir / layout.PROMPTS_TABLE)
    text = render_card(workdir=workdir).read_text()
    assert "**Test build**: sd2" in text
    assert "](https://huggingface.co/tiny:sd2" not in text and "| tiny:sd2 / " in text  # stats vs sample json
    assert "records no source" in text
