"""Decode one origin: checks, EXIF orientation, conversion to RGB, hashes, normalised PNG.

`decode_item` runs in worker processes, so it takes and returns plain picklable values and
never raises for a bad image: it returns a row with status "rejected" and a reason code
("decode_error", "too_large", ...) plus a human detail.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from oripid.builders.origins_sources import SourceItem


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
    orientation = image.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
        steps.append(f"exif_orientation {orientation} applied")
    image, conversion = _convert(image, settings.background)
    if conversion:
        steps.append(conversion)
    return image, mode, fmt, "; ".join(steps)


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
    # No ancillary chunks: a source ICC profile would be wrong after a CMYK conversion, and
    # dropping them keeps the file a function of the pixels alone (pixels are taken as sRGB).
    rgb.info = {}
    rgb.save(tmp, format="PNG", compress_level=settings.png_compress_level)
    os.replace(tmp, target)  # atomic: two workers on the same content race harmlessly
