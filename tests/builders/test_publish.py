"""Publishing over real HTTP: the real huggingface_hub client against the local Hub server."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import huggingface_hub
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi

from oripid.builders import layout
from oripid.builders.publish import push_dataset, release_files, verify_dataset
from oripid.cli import main
from oripid.errors import OripidError
from tests.hub_server import LFS_EXTENSIONS, HubServer
from tests.release_fixture import write_release_workspace, write_validation_report

TOKEN = "hf_oripidTestSecret0123456789abcdefXYZ"
USER = "alice"
REPO = "alice/oripid-tiny"
MODELS = ("sd2", "sdxl", "sd3")


@pytest.fixture
def online(monkeypatch):
    """Let the client talk to the loopback server (conftest still blocks every other address)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # Classic LFS path: the server does not speak xet (see tests/hub_server.py).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


@pytest.fixture
def hub(online):
    with HubServer(tokens={TOKEN: USER, "hf_bob": "bob"}) as server:
        yield server


@pytest.fixture
def workspace(tmp_path):
    return write_release_workspace(tmp_path / "ws", models=MODELS)["workdir"]


def _push(workspace, hub, **kwargs):
    return push_dataset(workdir=workspace, repo_id=REPO, endpoint=hub.endpoint, **kwargs)


def _lfs_puts(hub) -> int:
    return hub.count("PUT", r"^/lfs-upload/")


def test_push_creates_private_repo_uploads_and_verifies(workspace, hub):
    result = _push(workspace, hub)
    repo = hub.repo("dataset", REPO)
    assert repo.private is True and result.created
    expected = {f.path for f in release_files(workspace)}
    assert set(repo.files) == expected | {".gitattributes"}
    for path in expected:  # byte for byte what the workspace holds
        assert repo.files[path].content == (workspace / path).read_bytes(), path
    assert "README.md" in expected and "validation/report.json" in expected
    assert not any(
        p.startswith(("origins/", "prompts/")) or p in ("plan.json", "oripid.yaml") for p in expected
    )
    assert result.verification.ok and result.verification.checked == len(expected)
    assert 'load_dataset("alice/oripid-tiny"' in repo.files["README.md"].content.decode()
    # Tars and indexes went through LFS, the card inline, as on the real Hub.
    assert repo.files["data/query/sdxl/query-sdxl-000000.tar"].lfs
    assert not repo.files["README.md"].lfs

    # A second push changes nothing and uploads nothing.
    puts = _lfs_puts(hub)
    commits = len(repo.commits)
    again = _push(workspace, hub)
    assert again.verification.ok and not again.created
    assert _lfs_puts(hub) == puts and len(repo.commits) == commits


def test_public_flag_creates_a_public_repo(workspace, hub):
    _push(workspace, hub, public=True)
    assert hub.repo("dataset", REPO).private is False


def test_push_through_the_streamed_multi_commit_pipeline(workspace, online, monkeypatch):
    # With xet enabled the client takes upload_folder's streamed pipeline; the server answers
    # "regular" for every file so that pipeline commits inline content (no xet storage needed).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", False)
    with HubServer(tokens={TOKEN: USER}, lfs=False) as server:
        result = push_dataset(workdir=workspace, repo_id=REPO, endpoint=server.endpoint)
        assert result.verification.ok
        files = server.repo("dataset", REPO).files
        assert (
            files["data/train/sd2/train-sd2-000000.tar"].content
            == (workspace / "data/train/sd2/train-sd2-000000.tar").read_bytes()
        )


def test_interrupted_upload_resumes_where_it_stopped(workspace, hub):
    # The server stores tars, parquets and pngs through LFS, as the Hub's .gitattributes does.
    n_lfs = sum(1 for f in release_files(workspace) if f.path.endswith(LFS_EXTENSIONS))
    assert n_lfs > 3
    # Fault mode: three LFS uploads succeed, then the storage fails until cleared.
    hub.fail(method="PUT", path=r"^/lfs-upload/", after=3, times=None)
    with pytest.raises(OripidError, match="interrupted.*rerun the same `oripid push`"):
        _push(workspace, hub)
    repo = hub.repo("dataset", REPO)
    assert set(repo.files) == {".gitattributes"}  # nothing committed
    assert len(hub.lfs_store) == 3
    hub.clear_faults()
    before = _lfs_puts(hub)
    result = _push(workspace, hub)
    assert result.verification.ok
    # Only the objects the server did not hold were sent again.
    assert _lfs_puts(hub) - before == n_lfs - 3
    assert len(hub.lfs_store) == n_lfs


def test_verification_catches_missing_and_corrupt_files_and_a_rerun_repairs_them(workspace, hub):
    _push(workspace, hub)
    hub.delete_file("dataset", REPO, "data/query/sd3/query-sd3-000001.tar")
    hub.corrupt_file("dataset", REPO, "data/query/sdxl/query-sdxl-000000.tar")
    hub.corrupt_file("dataset", REPO, "validation/report.json")  # a regular (non-LFS) file
    report = verify_dataset(workdir=workspace, repo_id=REPO, endpoint=hub.endpoint)
    assert not report.ok
    assert report.missing == ["data/query/sd3/query-sd3-000001.tar"]
    assert sorted(report.hash_mismatch) == ["data/query/sdxl/query-sdxl-000000.tar", "validation/report.json"]
    assert "1 missing" in report.summary() and "2 different content" in report.summary()

    result = _push(workspace, hub)
    assert result.verification.ok
    assert verify_dataset(workdir=workspace, repo_id=REPO, endpoint=hub.endpoint).ok


def test_push_fails_when_its_own_verification_finds_damage(workspace, hub):
    # The storage silently damages a file: the upload succeeds, the verification must not.
    hub.damage_on_commit(r"^data/gallery/origin/gallery-origin-000000\.tar$")
    with pytest.raises(
        OripidError, match="verification of alice/oripid-tiny failed.*1 different content.*rerun"
    ):
        _push(workspace, hub)
    hub.clear_faults()
    assert _push(workspace, hub).verification.ok  # the rerun uploads the damaged file again


def test_dry_run_lists_files_and_bytes_and_changes_nothing(workspace, hub, capsys):
    before = {p: p.stat().st_mtime_ns for p in workspace.rglob("*")}
    assert (
        main(["push", "--workdir", str(workspace), "--repo", REPO, "--dry-run", "--endpoint", hub.endpoint])
        == 0
    )
    out = capsys.readouterr().out
    files = release_files(workspace)
    assert f"would upload {len(files)} files ({sum(f.size for f in files):,} bytes)" in out
    assert "data/query/sdxl/query-sdxl-000000.tar" in out
    assert hub.requests == []  # contacted nobody
    assert {p: p.stat().st_mtime_ns for p in workspace.rglob("*")} == before


@pytest.mark.parametrize(
    "change,message",
    [
        ("missing", "no validation report.*oripid validate"),
        ("failed", "did not pass.*leakage.*oripid validate"),
        ("stale", "stale.*rerun `oripid validate"),
    ],
)
def test_refuses_without_a_current_passing_validation(workspace, hub, change, message):
    report_path = workspace / layout.VALIDATION_DIR / "report.json"
    if change == "missing":
        report_path.unlink()
    elif change == "failed":
        write_validation_report(workspace, passed=False)
    else:
        index = workspace / "data/query/sdxl/query-sdxl-000000.parquet"
        table = pq.read_table(index)
        pq.write_table(table.slice(0, table.num_rows - 1), index)  # the shards changed after validation
    for dry_run in (True, False):
        with pytest.raises(OripidError, match=message):
            _push(workspace, hub, dry_run=dry_run)
    assert hub.repos == {}


@pytest.mark.parametrize(
    "repo_id", ["oripid-tiny", "alice/oripid/tiny", "-alice/x", "alice/", "alice/a..b", ""]
)
def test_refuses_a_repository_id_of_the_wrong_form(workspace, hub, repo_id):
    with pytest.raises(OripidError, match="not of the form.*--repo"):
        push_dataset(workdir=workspace, repo_id=repo_id, endpoint=hub.endpoint)
    assert hub.requests == []


def test_refuses_without_a_login(workspace, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(OripidError, match="no Hugging Face login.*hf auth login"):
        _push(workspace, hub)


def test_refuses_a_rejected_token(workspace, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    with pytest.raises(OripidError, match="rejected the login.*hf auth login") as err:
        _push(workspace, hub)
    assert "hf_not_a_valid_token" not in str(err.value)


def test_refuses_a_namespace_the_login_cannot_write(workspace, hub):
    with pytest.raises(OripidError, match="logged in as 'alice'.*--repo alice/x"):
        push_dataset(workdir=workspace, repo_id="bob/x", endpoint=hub.endpoint)


def test_refuses_a_repository_that_exists_with_other_content(workspace, hub):
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO, repo_type="dataset")
    api.upload_file(
        path_or_fileobj=b"someone else's data", path_in_repo="other.csv", repo_id=REPO, repo_type="dataset"
    )
    commits = len(hub.repo("dataset", REPO).commits)
    with pytest.raises(OripidError, match="already exists with other content.*other.csv.*new --repo"):
        _push(workspace, hub)
    assert not (workspace / layout.CARD).exists()  # a refusal changes nothing
    assert len(hub.repo("dataset", REPO).commits) == commits
    assert _lfs_puts(hub) == 0


def test_the_token_is_never_printed_logged_or_written(workspace, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    argv = ["-v", "push", "--workdir", str(workspace), "--repo", REPO, "--endpoint", hub.endpoint]
    assert main(argv) == 0
    # The failure path too: a file must be uploaded again and the storage refuses it.
    hub.delete_file("dataset", REPO, "data/query/sdxl/query-sdxl-000000.tar")
    hub.fail(method="PUT", path=r"^/lfs-upload/", times=None)
    hub.lfs_store.clear()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "verified" in captured.out and "interrupted" in captured.err
    assert hub.count("GET", r"^/api/whoami-v2$") == 2  # the token was used...
    for text in (captured.out, captured.err, caplog.text):  # ...and shown nowhere
        assert TOKEN not in text
    for folder in (workspace, Path(os.environ["HF_HOME"])):  # the workspace, and the client's home
        for path in folder.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path
    for path, stored in hub.repo("dataset", REPO).files.items():
        assert TOKEN.encode() not in stored.content, path
    assert any(record.name.startswith("oripid") for record in caplog.records)


def test_each_config_loads_through_hf_from_the_server(workspace, hub, monkeypatch, tmp_path):
    import datasets
    from datasets import load_dataset

    _push(workspace, hub)
    # datasets and huggingface_hub read the endpoint and the offline flag at import.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        huggingface_hub.constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        datasets.config, "HUB_DATASETS_URL", hub.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
    )
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    cache = str(tmp_path / "cache")
    written = _index_rows(workspace)  # rows per (split, model), read from the indexes
    for model in MODELS:
        queries = load_dataset(REPO, model, split="query", cache_dir=cache)
        assert queries.num_rows == written[("query", model)]
        assert {m["model"] for m in queries["json"]} == {model}
    stream = load_dataset(REPO, "sdxl", split="query", streaming=True)  # range reads over HTTP
    streamed = [row["json"]["origin_id"] for row in stream]
    assert len(streamed) == written[("query", "sdxl")]
    gallery = load_dataset(REPO, "gallery", split="gallery", cache_dir=cache)
    assert gallery.num_rows == written[("gallery", "origin")]
    # And the hf:// path the webdataset loader takes directly.
    direct = load_dataset(
        "webdataset",
        data_files={"query": f"hf://datasets/{REPO}/data/query/sdxl/*.tar"},
        split="query",
        cache_dir=cache,
    )
    assert direct.num_rows == written[("query", "sdxl")]
    assert json.dumps(direct[0]["json"])  # a struct, decoded


@pytest.mark.slow
def test_end_to_end_on_shards_from_the_real_builder(tmp_path, hub, monkeypatch):
    """Card and push read only the workspace contracts: run them on what `oripid build` writes."""
    import datasets

    from oripid.builders.build import build
    from oripid.builders.plan import make_plan, write_plan
    from oripid.config import load_config
    from tests.builders.workspace import make_workspace

    workdir = make_workspace(tmp_path / "w")
    write_plan(make_plan(load_config(workdir / layout.CONFIG), workdir), workdir)
    build(workdir)
    write_validation_report(workdir)  # stands in for `oripid validate` (same report contract)
    result = push_dataset(workdir=workdir, repo_id=REPO, endpoint=hub.endpoint)
    assert result.verification.ok
    uploaded = set(hub.repo("dataset", REPO).files)
    assert not any(p.startswith(("origins/", "logs/", "prompts/")) for p in uploaded)

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        huggingface_hub.constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.endpoint)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    for (split, model), rows in _index_rows(workdir).items():
        config = split if split in ("gallery", "train_origins") else model
        config_split = "train" if split == "train_origins" else split
        loaded = datasets.load_dataset(REPO, config, split=config_split, cache_dir=str(tmp_path / "c"))
        assert loaded.num_rows == rows, (split, model)


def _index_rows(workdir) -> dict[tuple[str, str], int]:
    rows: dict[tuple[str, str], int] = {}
    for index in workdir.glob("data/*/*/*.parquet"):
        key = (index.parent.parent.name, index.parent.name)
        rows[key] = rows.get(key, 0) + pq.read_metadata(index).num_rows
    return rows


def test_verify_remote_reports_unexpected_and_unverifiable_entries(tmp_path):
    from huggingface_hub.hf_api import RepoFile

    from oripid.builders.hub_verify import LocalFile, hash_files, verify_remote
    from tests.hub_server import StoredFile

    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.txt").write_bytes(b"hello")
    files = [LocalFile("a.bin", tmp_path / "a.bin", 3), LocalFile("b.txt", tmp_path / "b.txt", 5)]
    hash_files(files)
    remote = {
        "a.bin": RepoFile(**StoredFile(b"abc", lfs=True).tree_entry("a.bin")),
        "b.txt": RepoFile(path="b.txt", size=5, oid=None),  # a listing without any hash
        "stale.tar": RepoFile(**StoredFile(b"old", lfs=True).tree_entry("stale.tar")),
        ".gitattributes": RepoFile(**StoredFile(b"*", lfs=False).tree_entry(".gitattributes")),
    }
    report = verify_remote(files, remote, ignore={".gitattributes"})
    assert report.unverifiable == ["b.txt"] and report.unexpected == ["stale.tar"]
    assert not report.ok and "1 on the Hub but not in the release (stale.tar)" in report.summary()


def test_features_are_released_only_when_asked(workspace):
    (workspace / "features/query/sdxl").mkdir(parents=True)
    (workspace / "features/query/sdxl/query-sdxl-000000.safetensors").write_bytes(b"\0" * 8)
    assert not any(f.path.startswith("features/") for f in release_files(workspace))
    assert "features/query/sdxl/query-sdxl-000000.safetensors" in {
        f.path for f in release_files(workspace, include_features=True)
    }
    (workspace / "data/query/sdxl/query-sdxl-000009.tar.partial").write_bytes(b"x")
    assert not any(f.path.endswith(".partial") for f in release_files(workspace))
