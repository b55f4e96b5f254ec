"""Two CPU processes under torchrun: Accelerate's DDP keeps W identical on every rank, one file is written."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from oripid.eval.w_io import load_w

SCRIPT = """
import hashlib, sys
import numpy as np
from accelerate import PartialState
from oripid.eval.train_w import TrainWConfig, train_w

x, y = np.load(sys.argv[1]), np.load(sys.argv[2])
cfg = TrainWConfig(out_dim=8, epochs=1, iters_per_epoch=5, warmup_epochs=0, flat_epochs=0, p_origins=8,
                   include_origins=False)
result = train_w(x, y, config=cfg, cpu=True)
state = PartialState()
line = f"RANK {state.process_index} {state.num_processes} {hashlib.md5(result.raw_weight.numpy().tobytes()).hexdigest()}"
open(f"rank{state.process_index}.txt", "w").write(line)  # one file per rank: stdout lines interleave
state.wait_for_everyone()
state.destroy_process_group()  # gloo's threads abort the interpreter if the group outlives it
"""


def _torchrun(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_two_processes_agree_and_write_once(tmp_path, planted):
    np.save(tmp_path / "x.npy", planted.train_features[:800, :64])
    np.save(tmp_path / "y.npy", planted.train_labels[:800])
    (tmp_path / "run.py").write_text(SCRIPT)
    proc = _torchrun(["run.py", "x.npy", "y.npy"], tmp_path)
    written = all((tmp_path / f"rank{r}.txt").exists() for r in (0, 1))
    # torch's gloo threads can still abort a rank at interpreter exit, after destroy_process_group,
    # on a loaded machine (pytorch/pytorch PR 179291 describes the race). The work this checks is
    # done by then: both ranks wrote their line. Anything else is a failure.
    teardown_abort = written and "terminate called without an active exception" in proc.stderr
    assert proc.returncode == 0 or teardown_abort, proc.stderr[-3000:]
    ranks = sorted((tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert [r[1:3] for r in ranks] == [["0", "2"], ["1", "2"]]
    assert ranks[0][3] == ranks[1][3]  # gradients were averaged: same weights on both ranks

    (tmp_path / "c.yaml").write_text("warmup_epochs: 0\nflat_epochs: 0\np_origins: 8\n")
    cli = ["-m", "oripid", "train-w", "--features", "x.npy", "--labels", "y.npy", "--no-origins"]
    cli += ["--out", "w.safetensors", "--out-dim", "8", "--epochs", "1", "--iters-per-epoch", "3"]
    proc = _torchrun(cli + ["--config", "c.yaml", "--cpu"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote w.safetensors") == 1
    assert load_w(tmp_path / "w.safetensors").weight.shape == (8, 64)
