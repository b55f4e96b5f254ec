"""The reference trainer recovers a planted linear relation; schedule, sampler and config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oripid.errors import OripidError
from oripid.eval.reference_eval import evaluate_features
from oripid.eval.train_w import PKSampler, TrainWConfig, load_train_config, lr_factor, train_w

SMALL = dict(
    out_dim=64,
    epochs=10,
    iters_per_epoch=200,
    warmup_epochs=1,
    flat_epochs=1,
    p_origins=32,
    k_instances=4,
    ema_decay=0.99,
    lr=3e-3,
    log_every=500,
)


def _map(data, weight=None):
    rows = evaluate_features(
        data.query_features, data.query_labels, data.gallery_features, data.gallery_labels, weight=weight
    )
    return {r["model"]: r["mAP"] for r in rows}


def test_learned_w_recovers_the_planted_relation(planted):
    before = _map(planted)
    assert before["sd2"] < 0.4 and before["unseen (mean of 2)"] < 0.4
    result = train_w(
        planted.train_features,
        planted.train_labels,
        config=TrainWConfig(**SMALL),
        origin_features=planted.train_origin_features,
        origin_labels=planted.train_origin_labels,
        cpu=True,
    )
    assert result.weight.shape == (64, 256)
    after = _map(planted, result.weight)
    assert after["sd2"] >= 0.95 and after["unseen (mean of 2)"] >= 0.95, after
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_training_is_deterministic_on_cpu(planted):
    cfg = TrainWConfig(**{**SMALL, "epochs": 2, "iters_per_epoch": 10, "warmup_epochs": 0, "flat_epochs": 0})
    args = (planted.train_features[:2000], planted.train_labels[:2000])
    a = train_w(*args, config=cfg.model_copy(update={"include_origins": False}), cpu=True)
    b = train_w(*args, config=cfg.model_copy(update={"include_origins": False}), cpu=True)
    c = train_w(*args, config=cfg.model_copy(update={"include_origins": False, "seed": 1}), cpu=True)
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)
    # EMA lags the raw weights
    assert not torch.equal(a.weight, a.raw_weight)


def test_recipe_defaults_and_schedule():
    cfg = TrainWConfig()
    assert (cfg.out_dim, cfg.scale, cfg.margin, cfg.lr, cfg.weight_decay) == (512, 64.0, 0.35, 3.5e-4, 0.0)
    assert (cfg.epochs, cfg.iters_per_epoch, cfg.p_origins, cfg.k_instances, cfg.ema_decay) == (
        25,
        2000,
        128,
        4,
        0.9999,
    )
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(2000 * 2.5, cfg) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(2000 * 5, cfg) == 1.0 and lr_factor(2000 * 10 - 1, cfg) == 1.0
    assert lr_factor(2000 * 17.5, cfg) == pytest.approx(0.5)
    assert lr_factor(2000 * 25 - 1, cfg) == pytest.approx(0.0, abs=1e-7)
    per_epoch = cfg.model_copy(update={"schedule_step": "epoch"})
    assert lr_factor(2000 * 4 + 1999, per_epoch) == pytest.approx(0.01 + 0.99 * 4 / 5)


def test_pk_sampler_draws_p_distinct_origins_with_k_instances():
    classes = np.repeat(np.arange(50), [1 if c % 5 == 0 else 6 for c in range(50)])
    sampler = PKSampler(classes, p=20, k=4, seed=0)
    for _ in range(20):
        idx, cls = sampler.sample()
        assert len(set(cls.tolist())) == 20 and idx.shape == (80,)
        assert np.array_equal(classes[idx.numpy()], cls.numpy())
        for c in set(cls.tolist()):
            mine = idx[cls == c].tolist()
            if c % 5:  # six instances: drawn without replacement
                assert len(set(mine)) == 4


def test_config_errors_name_the_field(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 3\nwarmup_epochs: 5\n")
    with pytest.raises(OripidError, match="warmup_epochs"):
        load_train_config(path)
    path.write_text("lr_typo: 1\n")
    with pytest.raises(OripidError, match="lr_typo"):
        load_train_config(path)
    assert load_train_config(None, epochs=3, warmup_epochs=1, flat_epochs=1).epochs == 3


def test_include_origins_without_origin_features_is_a_user_error(planted):
    with pytest.raises(OripidError, match="include_origins"):
        train_w(planted.train_features, planted.train_labels, config=TrainWConfig(**SMALL), cpu=True)
