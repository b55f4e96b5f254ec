"""Query perturbations for robustness rows: Gaussian blur and JPEG re-encoding of PIL images.

A published query may be re-shared: recompressed or softened. The validation report adds one row per
perturbation (the same queries, perturbed, matched against the same gallery), named by
:attr:`Perturbation.name` (``blur_r2``, ``jpeg_q50``) so reports from different runs line up.
Every function is deterministic: same image and setting, same pixels.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageFilter

from oripid.errors import OripidError

DEFAULT_BLUR_RADII: tuple[float, ...] = (1.0, 2.0, 4.0)
DEFAULT_JPEG_QUALITIES: tuple[int, ...] = (90, 70, 50, 30)


def gaussian_blur(image: Image.Image, radius: float) -> Image.Image:
    """PIL Gaussian blur (``radius`` is the standard deviation in pixels); RGB out."""
    if radius < 0:
        raise OripidError(f"blur radius must be >= 0, got {radius}")
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=radius))


def jpeg_reencode(image: Image.Image, quality: int) -> Image.Image:
    """Encode as baseline JPEG at ``quality`` (1-95, 4:2:0 subsampling) and decode again; RGB out."""
    if not 1 <= quality <= 95:
        raise OripidError(f"JPEG quality must be within 1-95, got {quality}")
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=2, optimize=False)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


@dataclass(frozen=True)
class Perturbation:
    """A named image-to-image function; the name is the report row's key."""

    name: str
    apply: Callable[[Image.Image], Image.Image]

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.apply(image)


def blur(radius: float) -> Perturbation:
    return Perturbation(f"blur_r{radius:g}", lambda im: gaussian_blur(im, radius))


def jpeg(quality: int) -> Perturbation:
    return Perturbation(f"jpeg_q{quality}", lambda im: jpeg_reencode(im, quality))


def default_perturbations(
    blur_radii: Sequence[float] = DEFAULT_BLUR_RADII, jpeg_qualities: Sequence[int] = DEFAULT_JPEG_QUALITIES
) -> list[Perturbation]:
    """Blur at each radius, then JPEG at each quality, in that order."""
    return [blur(r) for r in blur_radii] + [jpeg(q) for q in jpeg_qualities]


def perturb_all(
    images: Iterable[Image.Image], perturbations: Sequence[Perturbation]
) -> dict[str, list[Image.Image]]:
    """``{name: [perturbed image, ...]}`` for every perturbation, images in input order."""
    images = list(images)
    names = [p.name for p in perturbations]
    if len(set(names)) != len(names):
        raise OripidError(f"perturbation names must be unique, got {names}")
    return {p.name: [p(im) for im in images] for p in perturbations}
