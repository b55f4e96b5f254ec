"""Decode one origin: checks, EXIF orientation, conversion to RGB, hashes, normalised PNG.

`decode_item` runs in worker processes, so it takes and returns plain picklable values and
never raises for a bad image: it returns a row with status "rejected" and a reason code
("decode_error", "too_large", ...) plus a human detail.

Colour: the normalised origins are sRGB. A file's embedded ICC profile (RGB, CMYK or gray) is
applied with littlecms (`PIL.ImageCms`) before the remaining conversions, and the row's
`conversion` records it: `icc:<profile description>->sRGB`; `icc:sRGB` for a profile that names
itself sRGB and whose conversion is a no-op (no 8-bit value moves by more than littlecms's
rounding, `SRGB_NOOP_TOLERANCE`), whose pixels are then kept as decoded; `icc_unreadable` for a
profile littlecms cannot parse or use (pixels kept as decoded, the image is still accepted);
`icc_ignored (...)` for a profile whose colour space does not fit the pixels. Files without a
profile are taken as sRGB, as browsers do. The content hash (`sha256`) and the phash are of the
converted pixels, so one picture embedded with two different profiles gives two content hashes,
while an sRGB-tagged copy and an untagged copy of the same pixels give one.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from oripid.builders.origins_sources import SourceItem

# Perceptual, not relative colorimetric: it is the intent photo viewers and Pillow default to, and
# the two differ only for LUT profiles (typically CMYK print profiles), where perceptual tables
# compress the gamut smoothly instead of clipping. Matrix/TRC RGB and gray profiles carry no
# perceptual table, so littlecms falls back to colorimetric and out-of-gamut colours clip.
ICC_INTENT = ImageCms.Intent.PERCEPTUAL
# An sRGB profile's round trip through littlecms moves a few 8-bit values by one (rounding of
# the profile's sampled curves); keeping the decoded pixels then keeps tagged and untagged copies
# of a picture one content hash.
SRGB_NOOP_TOLERANCE = 1
# The profile colour space (ICC header) -> the Pillow modes littlecms reads it from.
_ICC_MODES = {
    "RGB": ("RGB", "RGBA"),
    "CMYK": ("CMYK",),
    "GRAY": ("L", "LA", "I;16", "I;16L", "I;16B"),
}


@dataclass(frozen=True)
class DecodeSettings:
    min_side: int
    max_pixels: int
    max_file_bytes: int
    background: tuple[int, int, int]
    png_compress_level: int
    staging_dir: str


class Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def empty_row(ref: str) -> dict:
    return {
        "source": ref,
        "file_sha256": None,
        "sha256": None,
        "phash": None,
        "width": None,
        "height": None,
        "mode": None,
        "format": None,
        "conversion": None,
        "status": "rejected",
        "reason": None,
        "detail": None,
    }


def decode_item(item: SourceItem, settings: DecodeSettings) -> dict:
    row = empty_row(item.ref)
    try:
        if item.error:
            reason, _, detail = item.error.partition(": ")
            raise Rejected(reason, detail or reason)
        data = _read(item, settings)
        row["file_sha256"] = hashlib.sha256(data).hexdigest()
        rgb, mode, fmt, conversion = _to_rgb(data, settings)
        row.update(mode=mode, format=fmt, conversion=conversion, width=rgb.width, height=rgb.height)
        if min(rgb.size) < settings.min_side:
            raise Rejected(
                "too_small", f"{rgb.width}x{rgb.height}: smallest side < min_side {settings.min_side}"
            )
        # The content hash is of the decoded, normalised pixels (size included), not the file bytes:
        # the same picture re-wrapped (other container, stripped metadata) is the same origin.
        pixels = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
        pixels.update(rgb.tobytes())
        row["sha256"] = pixels.hexdigest()
        row["phash"] = str(imagehash.phash(rgb))
        _stage_png(rgb, row["sha256"], settings)
        row["status"] = "ok"
    except Rejected as exc:
        row["reason"], row["detail"] = exc.reason, exc.detail
    except Exception as exc:  # a decoder bug must not stop a million-image run; it is recorded
        row["reason"], row["detail"] = "decode_error", f"{type(exc).__name__}: {exc}"
    return row


def _read(item: SourceItem, settings: DecodeSettings) -> bytes:
    if item.data is not None:
        data = item.data
    else:
        path = Path(item.path or "")
        if not path.is_file():
            raise Rejected("missing_file", f"{path} does not exist")
        size = path.stat().st_size
        if size > settings.max_file_bytes:
            raise Rejected("file_too_large", f"{size} bytes > max_file_bytes {settings.max_file_bytes}")
        data = path.read_bytes()
    if not data:
        raise Rejected("empty_file", "zero bytes")
    if len(data) > settings.max_file_bytes:
        raise Rejected("file_too_large", f"{len(data)} bytes > max_file_bytes {settings.max_file_bytes}")
    return data


def _to_rgb(data: bytes, settings: DecodeSettings) -> tuple[Image.Image, str, str, str]:
    """Open, guard against decompression bombs, apply EXIF orientation, convert to 8-bit RGB."""
    # Pillow's own bomb check fires inside `open` with a message that hides the claimed size;
    # open only parses the header, so it is lifted for the call and our check below runs first.
    guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected("not_an_image", "no image format recognises these bytes") from None
    finally:
        Image.MAX_IMAGE_PIXELS = guard
    # The bomb guard: the header's claimed size is checked before any pixel is decoded.
    width, height = image.size
    if width * height > settings.max_pixels:
        raise Rejected(
            "too_large",
            f"header claims {width}x{height} = {width * height} px > max_pixels {settings.max_pixels}",
        )
    mode, fmt = image.mode, image.format or "unknown"
    steps: list[str] = []
    frames = getattr(image, "n_frames", 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS, guard = settings.max_pixels, Image.MAX_IMAGE_PIXELS
            try:
                image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = guard
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected("too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Rejected("decode_error", f"{fmt}: {exc}") from None
    if frames > 1:
        steps.append(f"frame 0 of {frames}")
    icc = image.info.get("icc_profile")
    orientation = image.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
        steps.append(f"exif_orientation {orientation} applied")
    # Colour management comes before `_convert`: the profile describes the file's own channels
    # (CMYK inks, 16-bit gray, straight alpha), so it must see them before they are reduced, and
    # transparency is then flattened on a background that is itself sRGB.
    if icc:
        image, icc_steps = _apply_icc(image, icc)
        steps.extend(icc_steps)
    image, conversion = _convert(image, settings.background)
    if conversion:
        steps.append(conversion)
    return image, mode, fmt, "; ".join(steps)


def _apply_icc(image: Image.Image, icc: bytes) -> tuple[Image.Image, list[str]]:
    """Convert the pixels from the embedded profile to sRGB; the notes say what was done.

    Never raises for a bad profile: the image is worth more than its colour tag, so the pixels are
    then kept as decoded and the note says why.
    """
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        name = _profile_name(source)
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return image, ["icc_unreadable"]
    space = source.profile.xcolor_space.strip()
    prepared, steps = _prepare_for_profile(image, space)
    if prepared is None:
        return image, [f"icc_ignored ({space or 'unknown'} profile, {image.mode} pixels)"]
    try:
        if space == "RGB" and "srgb" in name.lower() and _is_srgb_noop(icc):
            return prepared, [*steps, "icc:sRGB"]
        converted = _icc_to_srgb(prepared, icc)
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return image, ["icc_unreadable"]
    return converted, [*steps, f"icc:{name}->sRGB"]


def _profile_name(profile: ImageCms.ImageCmsProfile) -> str:
    """The profile's description, made safe for the `conversion` column ("; " joins its notes)."""
    text = ImageCms.getProfileDescription(profile)
    text = " ".join(re.sub(r"[^\w .,()+-]", " ", text).split())[:48].strip()
    return text or "unnamed"


def _prepare_for_profile(image: Image.Image, space: str) -> tuple[Image.Image | None, list[str]]:
    """The image in a mode littlecms reads for this profile space; None when the two do not fit."""
    if image.mode in _ICC_MODES.get(space, ()):
        return image, []
    # A palette's colours are in the profile's RGB space: expand them first.
    if space == "RGB" and image.mode in ("P", "PA"):
        mode = "RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB"
        return image.convert(mode), [f"{image.mode}->{mode}"]
    return None, []


def _icc_to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    if image.mode == "LA":
        # littlecms does not carry a gray image's alpha over to RGBA: convert gray, put it back.
        rgb = _icc_to_srgb(image.getchannel("L"), icc)
        rgb.putalpha(image.getchannel("A"))
        return rgb
    out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    converted = _transform(icc, image.mode, out_mode).apply(image)
    converted.info.pop("icc_profile", None)  # Pillow tags the result sRGB; the PNG carries no profile
    return converted


@functools.lru_cache(maxsize=32)
def _transform(icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform:
    # Cached per worker: a set's images mostly share a handful of profiles, and building a
    # transform from a large CMYK profile costs more than applying it to a photo.
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.buildTransform(source, _srgb(), in_mode, out_mode, renderingIntent=ICC_INTENT)


@functools.lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=32)
def _is_srgb_noop(icc: bytes) -> bool:
    """Whether converting through this RGB profile leaves every colour of a 52-level lattice per
    channel (140,608 colours, every 5th level) within the tolerance.

    Checked once per profile and worker, not per image. A lattice rather than all 2^24 colours
    keeps the check to a few MiB in every decoding process; a profile that only calls itself
    sRGB, or whose tables remap colours, moves lattice colours too.
    """
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    side = len(levels)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(side * side, side, 3)
    converted = np.asarray(_icc_to_srgb(Image.fromarray(cube, "RGB"), icc))
    moved = np.abs(converted.astype(np.int16) - cube.astype(np.int16))
    return int(moved.max()) <= SRGB_NOOP_TOLERANCE


def _convert(image: Image.Image, background: tuple[int, int, int]) -> tuple[Image.Image, str]:
    mode = image.mode
    if mode == "RGB":
        return image, ""
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit data: scale 0..65535 to 0..255 (Pillow's own convert would clip, not scale).
        array = np.asarray(image, dtype=np.uint32) >> 8
        gray = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB"), f"{mode}->L (16-bit scaled to 8-bit)->RGB"
    if mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float32))
        gray = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB"), "F->L (clipped to 0..255)->RGB"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema() == (255, 255):
            return rgba.convert("RGB"), f"{mode}->RGB (alpha fully opaque, dropped)"
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas, f"{mode}->RGB (alpha composited on {background})"
    return image.convert("RGB"), f"{mode}->RGB"


def _stage_png(rgb: Image.Image, sha256: str, settings: DecodeSettings) -> None:
    """Write the normalised origin once per content hash; the stage renames it to its id later."""
    target = Path(settings.staging_dir) / f"{sha256}.png"
    if target.exists():
        return
    tmp = target.with_name(f"{sha256}.{os.getpid()}.tmp")
    # No ancillary chunks: the pixels are sRGB now (any embedded profile was applied or, as the
    # row records, could not be), so the source's iCCP would be wrong; and dropping them keeps
    # the file a function of the pixels alone.
    rgb.info = {}
    rgb.save(tmp, format="PNG", compress_level=settings.png_compress_level)
    os.replace(tmp, target)  # atomic: two workers on the same content race harmlessly
