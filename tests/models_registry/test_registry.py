"""The registry: seven validated entries, user-added models, clear errors, and the shared loader."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oripid.builders.generate import Img2ImgRunner, settings_for
from oripid.errors import OripidError
from oripid.models_registry.architecture import build_architecture, parameter_count
from oripid.models_registry.loader import load_pipeline, tiny_path
from oripid.models_registry.registry import ORIPID_MODELS, load_registry

REPO = Path(__file__).resolve().parents[2]

EIGHTH_MODEL = """\
key: ip2p
display_name: InstructPix2Pix (tiny test entry)
checkpoint: timbrooks/instruct-pix2pix
revision: null
pipeline: StableDiffusionInstructPix2PixPipeline
native_resolution: 512
dtype: float16
defaults: {guidance_scale: 7.5, num_inference_steps: 2, extra: {image_guidance_scale: 1.5}}
license: mit
architecture:
  unet: {library: diffusers, class_name: UNet2DConditionModel, config: {in_channels: 8, sample_size: 64}}
tiny: {builder: "tests.models_registry.tiny_instruct_pix2pix:build", resolution: 64}
"""


def _origin() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))


def test_seven_models_in_paper_order_with_explicit_defaults():
    registry = load_registry()
    assert registry.keys() == list(ORIPID_MODELS)
    for key in ORIPID_MODELS:
        entry = registry.get(key)
        assert entry.defaults.strength is not None and entry.defaults.num_inference_steps > 0
    assert registry.get("sd2").checkpoint.startswith("sd2-community/")  # official repos were removed
    assert registry.get("sd3").gated and registry.get("sd3").pass_height_width
    assert registry.get("kolors").pass_height_width
    for key in ("sdxl", "opendalle", "colorfulxl"):
        assert registry.get(key).vae_force_upcast and registry.get(key).disable_watermarker
    assert registry.get("opendalle").license == "cc-by-nc-nd-4.0"


@pytest.mark.parametrize("key", ORIPID_MODELS)
def test_tiny_pipeline_is_deterministic_finite_and_round_trips(key):
    registry = load_registry()
    entry = registry.get(key)
    folder = tiny_path(entry)
    assert (folder / "model_index.json").is_file()  # saved with save_pretrained, loaded back below
    settings = settings_for(entry, None, entry.tiny.resolution)
    outputs = []
    for _ in range(2):
        pipeline = load_pipeline(key, variant="tiny", device="cpu", registry=registry)
        assert type(pipeline).__name__ == entry.pipeline
        result = Img2ImgRunner(pipeline, entry, settings)._call([_origin()], ["a red house"], [7])[0]
        outputs.append(result)
    assert outputs[0].shape == (64, 64, 3)
    assert np.isfinite(outputs[0]).all()
    np.testing.assert_array_equal(outputs[0], outputs[1])
    other_seed = Img2ImgRunner(pipeline, entry, settings)._call([_origin()], ["a red house"], [8])[0]
    assert not np.array_equal(outputs[0], other_seed)


def test_sdxl_finetunes_share_architecture_but_not_defaults_or_weights():
    registry = load_registry()
    sdxl, opendalle = registry.get("sdxl"), registry.get("opendalle")
    assert sdxl.architecture == opendalle.architecture
    assert (sdxl.checkpoint, sdxl.license) != (opendalle.checkpoint, opendalle.license)
    a = load_pipeline("sdxl", "tiny", device="cpu", registry=registry).unet.conv_in.weight
    b = load_pipeline("opendalle", "tiny", device="cpu", registry=registry).unet.conv_in.weight
    assert a.shape == b.shape and not torch.equal(a, b)


def test_eighth_model_from_a_workspace_file_runs_through_the_same_loader(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ip2p.yaml").write_text(EIGHTH_MODEL)
    registry = load_registry(tmp_path)
    assert registry.keys()[-1] == "ip2p" and len(registry.keys()) == 8
    entry = registry.get("ip2p")
    pipeline = load_pipeline("ip2p", variant="tiny", device="cpu", registry=registry)
    assert type(pipeline).__name__ == "StableDiffusionInstructPix2PixPipeline"
    runner = Img2ImgRunner(pipeline, entry, settings_for(entry, None, 64))
    assert "strength" not in runner.call_kwargs() and runner.call_kwargs()["image_guidance_scale"] == 1.5
    [result] = runner.generate([_origin()], ["make it snow"], [3])
    assert result.failure is None and result.image.size == (64, 64)


def test_eighth_model_from_an_entry_point(tmp_path, monkeypatch):
    entry_file = tmp_path / "ip2p.yaml"
    entry_file.write_text(EIGHTH_MODEL)
    plugin = tmp_path / "site"
    (plugin / "oripid_ip2p_plugin").mkdir(parents=True)
    (plugin / "oripid_ip2p_plugin" / "__init__.py").write_text(f"ENTRY = {str(entry_file)!r}\n")
    dist = plugin / "oripid_ip2p_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: oripid-ip2p-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[oripid.models]\nip2p = oripid_ip2p_plugin:ENTRY\n")
    monkeypatch.syspath_prepend(str(plugin))
    registry = load_registry()
    assert "ip2p" in registry.keys()
    assert registry.sources["ip2p"]["checkpoint"] == str(entry_file)


def test_workspace_file_can_override_a_checkpoint_with_extends(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sd2.yaml").write_text("extends: sd2\ncheckpoint: /data/my-sd2-mirror\n")
    registry = load_registry(tmp_path)
    entry = registry.get("sd2")
    assert entry.checkpoint == "/data/my-sd2-mirror"
    assert entry.pipeline == "StableDiffusionImg2ImgPipeline"
    assert registry.sources["sd2"]["checkpoint"].endswith("models/sd2.yaml")
    assert "models_registry/models/sd2.yaml" in registry.sources["sd2"]["pipeline"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key: x\n", "field 'display_name': missing"),
        (
            EIGHTH_MODEL.replace("StableDiffusionInstructPix2PixPipeline", "NoSuchPipeline"),
            "has no pipeline class 'NoSuchPipeline'",
        ),
        (
            EIGHTH_MODEL.replace("revision: null", "revision: main"),
            "field 'revision': 'main' is not a commit sha",
        ),
        (EIGHTH_MODEL.replace("license: mit", "license: mit\ncolour: red"), "field 'colour': unknown field"),
        ("key: [unclosed\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        (EIGHTH_MODEL.replace("tiny: {builder", "tiny: {family: sd2, builder"), "exactly one of tiny.family"),
    ],
)
def test_bad_registry_files_name_the_file_and_field(tmp_path, text, message):
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "bad.yaml"
    path.write_text(text)
    with pytest.raises(OripidError) as info:
        load_registry(tmp_path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_pinned_revision_accepts_commit_and_tag(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.yaml").write_text(
        EIGHTH_MODEL.replace("revision: null", "revision: " + "a" * 40)
    )
    (tmp_path / "models" / "b.yaml").write_text(
        EIGHTH_MODEL.replace("revision: null", "revision: refs/tags/v1.0").replace("key: ip2p", "key: ip2p_b")
    )
    registry = load_registry(tmp_path)
    assert registry.get("ip2p").revision == "a" * 40 and registry.get("ip2p_b").revision == "refs/tags/v1.0"


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(OripidError, match="unknown model key 'sd4'; known keys: sd2, sdxl"):
        load_registry().get("sd4")


def test_full_size_architectures_instantiate_on_meta():
    registry = load_registry()
    expected_billions = {"sd2": 0.87, "sdxl": 2.57, "kandinsky3": 3.06, "sd3": 2.03, "kolors": 2.58}
    for key, billions in expected_billions.items():
        entry = registry.get(key)
        denoiser = build_architecture(entry, [entry.denoiser_name])[entry.denoiser_name]
        assert next(denoiser.parameters()).device.type == "meta"
        assert parameter_count(denoiser) / 1e9 == pytest.approx(billions, rel=0.01)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oripid", *args], cwd=REPO, capture_output=True, text=True)


def test_cli_models_list_show_and_errors(tmp_path):
    listing = _cli("models", "list")
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == list(ORIPID_MODELS)
    show = _cli("models", "show", "sdxl")
    assert show.returncode == 0 and "disable_watermarker" in show.stdout and "sdxl.yaml" in show.stdout
    unknown = _cli("models", "show", "sd4")
    assert unknown.returncode == 2 and "known keys" in unknown.stderr and "Traceback" not in unknown.stderr
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.yaml").write_text(
        textwrap.dedent(EIGHTH_MODEL).replace("revision: null", "revision: main")
    )
    bad = _cli("models", "list", "--workdir", str(tmp_path))
    assert bad.returncode == 2 and "bad.yaml" in bad.stderr and "Traceback" not in bad.stderr
    version = _cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("oripid ")
