"""Real colour photos usable as origins offline: the demo set shipped in `assets/origins/`, and
the photos that scikit-image, scikit-learn and matplotlib ship inside their packages.

`python -m oripid.builders.origins_samples OUT` regenerates the shipped demo set (longest side
<= 512 px, JPEG quality 90); `assets/origins/LICENSES.md` records where each came from.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from PIL import Image

SAMPLES_DIR = Path(__file__).parent / "assets" / "origins"

# name -> (package, path inside the package). Licences: see assets/origins/LICENSES.md.
PACKAGE_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def sample_origins_dir() -> Path:
    """The shipped demo origins (about a dozen JPEGs)."""
    return SAMPLES_DIR


def package_photos() -> dict[str, Path]:
    """Paths of the photos shipped inside the installed packages (missing packages are skipped)."""
    found: dict[str, Path] = {}
    for name, (package, rel) in PACKAGE_PHOTOS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if path.is_file():
            found[name] = path
    return found


def write_samples(out: Path, longest_side: int = 512, quality: int = 90) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in sorted(package_photos().items()):
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        rgb.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
        target = out / f"{name}.jpg"
        rgb.save(target, format="JPEG", quality=quality, optimize=True)
        written.append(target)
    return written


if __name__ == "__main__":
    for written_path in write_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR):
        print(written_path)
