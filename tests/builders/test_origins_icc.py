"""Origins ingest applies embedded ICC profiles: wide-gamut RGB, sRGB, CMYK, gray, broken profiles.

Pillow can only create sRGB/LAB/XYZ profiles and no .icc file ships with the environment, so the
other profiles are written here: minimal ICC v2 matrix/TRC (RGB, gray) and lut16 (CMYK) profiles.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from oripid.builders.ingest import ingest_origins, read_manifest
from oripid.builders.origins_samples import sample_origins_dir

QUIET = {"progress": False, "workers": 1}
D50 = (0.9642, 1.0, 0.8249)
INTENT = ImageCms.Intent.PERCEPTUAL  # the intent ingest uses
# Bradford-adapted (D50) primaries of the two RGB spaces, as columns X, Y, Z per primary.
ADOBE_RGB_D50 = (
    (0.6097559, 0.3111242, 0.0194811),
    (0.2052401, 0.6256560, 0.0608902),
    (0.1492240, 0.0632197, 0.7448387),
)
SRGB_D50 = (
    (0.4360747, 0.2225045, 0.0139322),
    (0.3850649, 0.7168786, 0.0971045),
    (0.1430804, 0.0606169, 0.7141733),
)


# --- ICC v2 writer -------------------------------------------------------------------------------


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in values)


def _desc(text: str) -> bytes:
    ascii_z = text.encode("ascii") + b"\0"
    # textDescriptionType: ASCII part, empty Unicode part, empty ScriptCode part (67-byte field).
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_z)) + ascii_z + bytes(8) + bytes(3) + bytes(67)


def _gamma(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def _curve(values: list[float]) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(
        f">I{len(values)}H", len(values), *(round(v * 65535) for v in values)
    )


def _profile(space: bytes, device_class: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """Header, tag table and 4-byte aligned tag data; PCS XYZ, D50."""
    offset, body, table = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    body += bytes(-len(body) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I4sI", size, b"\0" * 4, 0x02100000)
        + device_class
        + space
        + b"XYZ "
        + bytes(12)  # date
        + b"acsp"
        + bytes(24)  # platform, flags, manufacturer, model, attributes
        + bytes(4)  # rendering intent
        + b"".join(_s15(v) for v in D50)
        + bytes(48)  # creator, profile id, reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _common(name: str) -> list[tuple[bytes, bytes]]:
    return [(b"desc", _desc(name)), (b"cprt", b"text\0\0\0\0none\0"), (b"wtpt", _xyz(D50))]


def rgb_profile(name: str, primaries=ADOBE_RGB_D50, trc: bytes | None = None) -> bytes:
    trc = trc or _gamma(563 / 256)  # Adobe RGB (1998): gamma 2.19921875
    colorants = [(tag, _xyz(xyz)) for tag, xyz in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries, strict=True)]
    return _profile(
        b"RGB ", b"mntr", _common(name) + colorants + [(b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc)]
    )


def srgb_iec_profile() -> bytes:
    """Like the common 'sRGB IEC61966-2.1' profile: the sRGB curve sampled at 1024 points."""
    x = np.linspace(0, 1, 1024)
    linear = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return rgb_profile("sRGB IEC61966-2.1", SRGB_D50, _curve(list(linear)))


def gray_profile(name: str, gamma: float) -> bytes:
    return _profile(b"GRAY", b"mntr", _common(name) + [(b"kTRC", _gamma(gamma))])


def _cmyk_to_srgb_model(c, m, y, k):
    """Inks that are not Pillow's ideal ones: cyan also absorbs green, magenta some blue."""
    return (
        (1 - c) * (1 - k),
        (1 - 0.35 * c) * (1 - m) * (1 - k),
        (1 - 0.1 * c) * (1 - 0.15 * m) * (1 - y) * (1 - k),
    )


def cmyk_profile(name: str, grid: int = 5) -> bytes:
    """An output-class CMYK profile with one lut16 A2B0 table (CMYK -> PCS XYZ)."""
    srgb_to_xyz = np.array(SRGB_D50).T
    clut = []
    for c in np.linspace(0, 1, grid):
        for m in np.linspace(0, 1, grid):
            for y in np.linspace(0, 1, grid):
                for k in np.linspace(0, 1, grid):
                    encoded = np.array(_cmyk_to_srgb_model(c, m, y, k))
                    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
                    clut.extend(srgb_to_xyz @ linear)
    identity = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    lut = (
        b"mft2\0\0\0\0"
        + struct.pack(">BBBB", 4, 3, grid, 0)
        + b"".join(_s15(v) for v in identity)
        + struct.pack(">HH", 2, 2)  # two-entry (identity) input and output curves
        + struct.pack(">8H", *[0, 65535] * 4)
        + b"".join(struct.pack(">H", min(65535, round(v * 32768))) for v in clut)  # u1Fixed15 XYZ
        + struct.pack(">6H", *[0, 65535] * 3)
    )
    return _profile(b"CMYK", b"prtr", _common(name) + [(b"A2B0", lut)])


def builtin_srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- helpers -------------------------------------------------------------------------------------


def photo(name: str, side: int = 128) -> Image.Image:
    with Image.open(sample_origins_dir() / f"{name}.jpg") as image:
        rgb = image.convert("RGB")
    rgb.thumbnail((side, side))
    return rgb


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def to_srgb(image: Image.Image, icc: bytes, out_mode: str = "RGB") -> np.ndarray:
    """littlecms's own conversion, the reference the ingested pixels must match."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), image.mode, out_mode, INTENT)
    return np.asarray(transform.apply(image))


def ingest(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, dict[str, dict]]:
    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    ingest_origins(src, work, **QUIET)
    return work, {r["source"]: r for r in read_manifest(work).to_pylist()}


def staged(work: Path, row: dict) -> tuple[np.ndarray, dict]:
    assert row["status"] == "ok", row
    with Image.open(work / row["image"]) as image:
        return np.asarray(image.convert("RGB")), dict(image.info)


def saturation(pixels: np.ndarray) -> np.ndarray:
    """Per pixel spread of the channels (0: neutral)."""
    pixels = pixels.astype(np.int16)
    return pixels.max(axis=-1) - pixels.min(axis=-1)


# --- tests ---------------------------------------------------------------------------------------


def test_wide_gamut_rgb_profile_is_converted_to_srgb(tmp_path):
    adobe = rgb_profile("Adobe RGB (1998) test")
    picture = photo("coffee")
    patches = np.asarray(picture).copy()
    patches[:16, :16] = (100, 180, 60)  # in both gamuts: sRGB needs more extreme numbers for it
    patches[:16, 16:32] = (128, 128, 128)
    picture = Image.fromarray(patches)
    rgba = photo("rocket").convert("RGBA")
    alpha = np.full((rgba.height, rgba.width), 255, np.uint8)
    alpha[:, :20] = 0
    rgba.putalpha(Image.fromarray(alpha))
    palette = photo("astronaut").convert("P", palette=Image.Palette.ADAPTIVE)
    work, rows = ingest(
        tmp_path,
        {
            "adobe.png": encode(picture, icc_profile=adobe),
            "adobe.jpg": encode(photo("chelsea"), "JPEG", quality=95, icc_profile=adobe),
            "adobe_alpha.png": encode(rgba, icc_profile=adobe),
            "adobe_palette.png": encode(palette, icc_profile=adobe),
        },
    )
    row = rows["adobe.png"]
    assert row["conversion"] == "icc:Adobe RGB (1998) test->sRGB"
    pixels, info = staged(work, row)
    assert "icc_profile" not in info, "the normalised PNG is sRGB and carries no profile"
    np.testing.assert_array_equal(pixels, to_srgb(picture, adobe))
    assert not np.array_equal(pixels, patches)
    assert tuple(pixels[4, 4]) != (100, 180, 60)
    assert saturation(pixels[:16, :16]).min() > 120, "the Adobe RGB green is more saturated in sRGB numbers"
    assert saturation(pixels[:16, 16:32]).max() <= 1, "neutral stays neutral"
    assert saturation(pixels).mean() > saturation(patches).mean()
    # The content hash is of the converted pixels.
    untagged = {r["sha256"] for r in ingest(tmp_path / "plain", {"a.png": encode(picture)})[1].values()}
    assert row["sha256"] not in untagged

    assert rows["adobe.jpg"]["conversion"] == "icc:Adobe RGB (1998) test->sRGB"
    with Image.open(io.BytesIO(encode(photo("chelsea"), "JPEG", quality=95, icc_profile=adobe))) as jpeg:
        expected = to_srgb(jpeg.convert("RGB"), adobe)
    np.testing.assert_array_equal(staged(work, rows["adobe.jpg"])[0], expected)

    # Alpha: the colours are converted first, then flattened on the (sRGB) white background.
    row = rows["adobe_alpha.png"]
    assert (
        row["conversion"]
        == "icc:Adobe RGB (1998) test->sRGB; RGBA->RGB (alpha composited on (255, 255, 255))"
    )
    pixels = staged(work, row)[0]
    assert (pixels[:, :20] == 255).all()
    np.testing.assert_array_equal(pixels[:, 20:], to_srgb(rgba, adobe, "RGBA")[:, 20:, :3])

    # A palette's colours are in the profile's space: expanded, then converted.
    row = rows["adobe_palette.png"]
    assert row["mode"] == "P" and row["conversion"] == "P->RGB; icc:Adobe RGB (1998) test->sRGB"
    np.testing.assert_array_equal(staged(work, row)[0], to_srgb(palette.convert("RGB"), adobe))


def test_embedded_srgb_profile_keeps_the_pixels(tmp_path):
    picture, other = photo("chelsea"), photo("rocket")
    work, rows = ingest(
        tmp_path,
        {
            "a_plain.png": encode(picture),
            "b_builtin_srgb.png": encode(picture, icc_profile=builtin_srgb_profile()),
            "c_iec_srgb.png": encode(picture, icc_profile=srgb_iec_profile()),
            # Calls itself sRGB but has Adobe RGB primaries: converting is no no-op, so it is converted.
            "d_false_srgb.png": encode(other, icc_profile=rgb_profile("sRGB (not really)")),
        },
    )
    assert rows["a_plain.png"]["conversion"] == ""
    for name in ("b_builtin_srgb.png", "c_iec_srgb.png"):
        row = rows[name]
        assert row["conversion"] == "icc:sRGB", row
        # The pixels are kept as decoded, so the tagged copies are exact duplicates of the plain one.
        assert row["status"] == "duplicate" and row["reason"] == "exact_duplicate", row
        assert row["sha256"] == rows["a_plain.png"]["sha256"]
    np.testing.assert_array_equal(staged(work, rows["a_plain.png"])[0], np.asarray(picture))
    row = rows["d_false_srgb.png"]
    assert row["conversion"] == "icc:sRGB (not really)->sRGB"
    np.testing.assert_array_equal(staged(work, row)[0], to_srgb(other, rgb_profile("sRGB (not really)")))


def test_unusable_profiles_keep_the_image_and_say_so(tmp_path):
    no_curves = _profile(b"RGB ", b"mntr", _common("no TRC") + [(b"rXYZ", _xyz(D50))])
    pictures = {
        name: photo(name) for name in ("coffee", "rocket", "astronaut", "chelsea", "hubble_deep_field")
    }
    work, rows = ingest(
        tmp_path,
        {
            "garbage.png": encode(pictures["coffee"], icc_profile=b"not an icc profile" * 8),
            "garbage.jpg": encode(pictures["rocket"], "JPEG", quality=95, icc_profile=b"\xff" * 300),
            "truncated.png": encode(pictures["astronaut"], icc_profile=rgb_profile("cut")[:150]),
            "no_curves.png": encode(pictures["chelsea"], icc_profile=no_curves),
            "gray_profile_on_rgb.png": encode(
                pictures["hubble_deep_field"], icc_profile=gray_profile("g", 1.8)
            ),
        },
    )
    for name in ("garbage.png", "garbage.jpg", "truncated.png", "no_curves.png"):
        assert rows[name]["status"] == "ok" and rows[name]["conversion"] == "icc_unreadable", rows[name]
    assert rows["gray_profile_on_rgb.png"]["conversion"] == "icc_ignored (GRAY profile, RGB pixels)"
    # Pixels kept as decoded.
    np.testing.assert_array_equal(staged(work, rows["garbage.png"])[0], np.asarray(pictures["coffee"]))
    np.testing.assert_array_equal(staged(work, rows["no_curves.png"])[0], np.asarray(pictures["chelsea"]))
    with Image.open(io.BytesIO(encode(pictures["rocket"], "JPEG", quality=95))) as jpeg:
        np.testing.assert_array_equal(staged(work, rows["garbage.jpg"])[0], np.asarray(jpeg.convert("RGB")))


def test_cmyk_jpeg_uses_its_embedded_cmyk_profile(tmp_path):
    profile = cmyk_profile("Test CMYK inks")
    cmyk = photo("coffee").convert("CMYK")
    inks = np.asarray(cmyk).copy()
    inks[:16, :16] = (255, 0, 0, 0)  # pure cyan
    cmyk = Image.fromarray(inks, "CMYK")
    data = encode(cmyk, "JPEG", quality=95, icc_profile=profile)
    plain = encode(photo("rocket").convert("CMYK"), "JPEG", quality=95)
    work, rows = ingest(tmp_path, {"profiled.jpg": data, "plain.jpg": plain})
    row = rows["profiled.jpg"]
    assert row["mode"] == "CMYK" and row["conversion"] == "icc:Test CMYK inks->sRGB"
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "CMYK" and decoded.info["icc_profile"] == profile
        expected, naive = to_srgb(decoded, profile), np.asarray(decoded.convert("RGB"))
    pixels = staged(work, row)[0]
    np.testing.assert_array_equal(pixels, expected)
    assert not np.array_equal(pixels, naive)
    # This profile's cyan ink also absorbs green: not Pillow's ideal (0, 255, 255).
    red, green, blue = pixels[4:12, 4:12].reshape(-1, 3).mean(axis=0)
    assert red < 10 and 150 < green < 190 and blue > 220, (red, green, blue)
    assert rows["plain.jpg"]["conversion"] == "CMYK->RGB", "no profile: the old formula"


@pytest.mark.parametrize("mode", ["L", "I;16", "LA"])
def test_gray_profile_is_converted(tmp_path, mode):
    profile = gray_profile("Gray gamma 1.8", 1.8)
    gray = photo("flower").convert("L")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
        assert image.mode == "I;16"
    elif mode == "LA":
        image = gray.convert("LA")
        alpha = np.full((gray.height, gray.width), 255, np.uint8)
        alpha[:, :10] = 0
        image.putalpha(Image.fromarray(alpha))
    else:
        image = gray
    work, rows = ingest(tmp_path, {"gray.png": encode(image, icc_profile=profile)})
    row = rows["gray.png"]
    assert row["mode"] == mode
    pixels = staged(work, row)[0]
    reference = to_srgb(gray, profile)
    if mode == "LA":
        assert (
            row["conversion"] == "icc:Gray gamma 1.8->sRGB; RGBA->RGB (alpha composited on (255, 255, 255))"
        )
        assert (pixels[:, :10] == 255).all()
        np.testing.assert_array_equal(pixels[:, 10:], reference[:, 10:])
    else:
        assert row["conversion"] == "icc:Gray gamma 1.8->sRGB"
        # 16-bit input goes through littlecms at full depth: within one level of the 8-bit path.
        assert np.abs(pixels.astype(np.int16) - reference).max() <= (1 if mode == "I;16" else 0)
    # Gamma 1.8 values re-encoded for sRGB's steeper curve: mid-tones get lighter, neutral stays neutral.
    assert saturation(pixels).max() == 0
    assert pixels[:, 10:, 0].mean() > np.asarray(gray)[:, 10:].mean() + 5
