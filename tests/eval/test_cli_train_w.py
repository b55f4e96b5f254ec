"""`oripid train-w` end to end on small files: both methods write a loadable W with provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oripid.cli import main
from oripid.eval.w_io import load_w


@pytest.fixture
def files(tmp_path, planted):
    np.save(tmp_path / "x.npy", planted.train_features[:800])
    np.save(tmp_path / "y.npy", planted.train_labels[:800])
    np.save(tmp_path / "ox.npy", planted.train_origin_features[:100])
    np.save(tmp_path / "oy.npy", planted.train_origin_labels[:100])
    return tmp_path


def test_closed_form_command(files, capsys):
    out = files / "w.safetensors"
    args = ["train-w", "--features", str(files / "x.npy"), "--labels", str(files / "y.npy")]
    args += ["--origin-features", str(files / "ox.npy"), "--origin-labels", str(files / "oy.npy")]
    assert main(args + ["--out", str(out), "--method", "closed-form", "--out-dim", "32"]) == 0
    w = load_w(out, expected_in_dim=256)
    assert w.weight.shape == (32, 256)
    assert w.metadata["method"] == "closed-form" and json.loads(w.metadata["config"])["out_dim"] == 32
    assert w.metadata["n_origins"] == "100"


def test_sgd_command_with_yaml_config(files):
    cfg = files / "train.yaml"
    cfg.write_text("epochs: 1\niters_per_epoch: 3\nwarmup_epochs: 0\nflat_epochs: 0\np_origins: 8\n")
    out = files / "w_sgd.safetensors"
    args = ["train-w", "--features", str(files / "x.npy"), "--labels", str(files / "y.npy"), "--no-origins"]
    assert main(args + ["--out", str(out), "--config", str(cfg), "--out-dim", "16", "--cpu"]) == 0
    meta = load_w(out).metadata
    assert json.loads(meta["config"])["iters_per_epoch"] == 3 and meta["method"] == "sgd"


def test_user_errors_exit_2(files, capsys):
    args = ["train-w", "--features", str(files / "missing.npy"), "--labels", str(files / "y.npy")]
    assert main(args + ["--out", str(files / "w.safetensors")]) == 2
    assert "missing.npy" in capsys.readouterr().err
    args = ["train-w", "--features", str(files / "x.npy"), "--labels", str(files / "oy.npy")]
    assert main(args + ["--out", str(files / "w.safetensors"), "--method", "closed-form"]) == 2
    assert "one id per row" in capsys.readouterr().err
