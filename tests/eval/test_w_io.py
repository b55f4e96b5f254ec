"""W save/load roundtrip and the public code's layouts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from oripid.errors import OripidError
from oripid.eval.w_io import load_w, save_w


def test_roundtrip_keeps_weight_and_metadata(tmp_path):
    w = torch.randn(512, 4096)
    path = save_w(tmp_path / "w.safetensors", w, {"method": "closed-form", "config": {"out_dim": 512}})
    loaded = load_w(path, expected_in_dim=4096)
    assert torch.equal(loaded.weight, w)
    assert loaded.metadata["method"] == "closed-form"
    assert loaded.metadata["config"] == '{"out_dim": 512}'
    assert loaded.metadata["in_dim"] == "4096" and (loaded.out_dim, loaded.in_dim) == (512, 4096)
    assert not (tmp_path / "w.safetensors.partial").exists()


def test_public_layouts(tmp_path):
    w = torch.randn(512, 4096)
    save_file({"linear.weight": w}, str(tmp_path / "public.safetensors"))
    assert torch.equal(load_w(tmp_path / "public.safetensors", 4096).weight, w)
    torch.save({"weight": w, "step": torch.tensor(3)}, tmp_path / "state.pth")
    assert torch.equal(load_w(tmp_path / "state.pth", 4096).weight, w)
    torch.save({"fc.weight": w}, tmp_path / "single.pt")
    assert torch.equal(load_w(tmp_path / "single.pt").weight, w)
    torch.save(w.half(), tmp_path / "bare.pt")
    loaded = load_w(tmp_path / "bare.pt")
    assert loaded.weight.dtype == torch.float32 and torch.allclose(loaded.weight, w, atol=1e-2)


def test_bad_files_are_user_errors(tmp_path):
    w = torch.randn(512, 4096)
    save_file({"a": w, "b": w.clone()}, str(tmp_path / "two.safetensors"))
    with pytest.raises(OripidError, match="cannot tell which tensor"):
        load_w(tmp_path / "two.safetensors")
    save_file({"weight": w.T.contiguous()}, str(tmp_path / "t.safetensors"))
    with pytest.raises(OripidError, match="transposed"):
        load_w(tmp_path / "t.safetensors", expected_in_dim=4096)
    with pytest.raises(OripidError, match="no such W file"):
        load_w(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(OripidError, match="not a readable safetensors"):
        load_w(tmp_path / "junk.safetensors")
    with pytest.raises(OripidError, match="ending in .safetensors"):
        save_w(tmp_path / "w.pt", w)
