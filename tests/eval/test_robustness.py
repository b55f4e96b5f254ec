"""Query perturbations: names, determinism, and that each actually changes the image as intended."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from oripid.errors import OripidError
from oripid.eval.robustness import default_perturbations, gaussian_blur, jpeg_reencode, perturb_all


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def _err(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def test_names_and_order():
    names = [p.name for p in default_perturbations()]
    assert names == ["blur_r1", "blur_r2", "blur_r4", "jpeg_q90", "jpeg_q70", "jpeg_q50", "jpeg_q30"]
    assert [p.name for p in default_perturbations((0.5,), (75,))] == ["blur_r0.5", "jpeg_q75"]


def test_stronger_settings_change_more_and_are_deterministic(image):
    blurs = [_err(image, gaussian_blur(image, r)) for r in (1, 2, 4)]
    jpegs = [_err(image, jpeg_reencode(image, q)) for q in (90, 50, 10)]
    assert 0 < blurs[0] < blurs[1] < blurs[2]
    assert 0 < jpegs[0] < jpegs[1] < jpegs[2]
    assert np.array_equal(np.asarray(jpeg_reencode(image, 50)), np.asarray(jpeg_reencode(image, 50)))
    out = perturb_all([image, image.convert("L")], default_perturbations())
    assert set(out) == {p.name for p in default_perturbations()}
    assert all(im.mode == "RGB" and im.size == (64, 64) for ims in out.values() for im in ims)


def test_bad_settings(image):
    with pytest.raises(OripidError, match="quality"):
        jpeg_reencode(image, 0)
    with pytest.raises(OripidError, match="radius"):
        gaussian_blur(image, -1)
