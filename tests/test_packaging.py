"""A built wheel installs into a fresh virtual environment and its console script runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["oripid", "oripid.builders", "oripid.prompts", "oripid.models_registry", "oripid.eval"]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv(tmp_path):
    # Build from a copy of the tracked files, so that no build/ folder of an earlier run leaks in,
    # and with --no-isolation: the build backend comes from this environment (no network).
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    for name in tracked.splitlines():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():
            target.symlink_to(os.readlink(REPO / name))
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = list((tmp_path / "dist").glob("oripid-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for package in SUBPACKAGES:
        assert package.replace(".", "/") + "/__init__.py" in names
    assert "oripid/models_registry/models/sd2.yaml" in names
    assert "oripid/builders/assets/origins/LICENSES.md" in names  # the demo's sample origins
    assert "oripid/prompts/templates/styles.txt" in names
    card = zipfile.ZipFile(wheel).read("oripid/builders/assets/DATASET_CARD.md")
    assert card == (REPO / "DATASET_CARD.md").read_bytes()  # the card template, not a dangling link
    assert not any(name.startswith(("builders/", "eval/", "tests/")) for name in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # The dependencies are not downloaded (tests are offline): the fresh environment sees this
    # one's site-packages through a .pth file, and the wheel itself is installed without deps.
    fresh_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(fresh_site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )

    help_text = subprocess.run(
        [str(env_dir / "bin" / "oripid"), "--help"], check=True, capture_output=True, text=True
    )
    assert "models" in help_text.stdout and "build" in help_text.stdout
    code = (
        "import importlib, sys\n"
        + "".join(
            f"m = importlib.import_module({p!r}); assert m.__file__.startswith(sys.prefix), m.__file__\n"
            for p in SUBPACKAGES
        )
        + "from oripid.models_registry.registry import load_registry; print(len(load_registry().keys()))"
    )
    result = subprocess.run(
        [str(python), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.stdout.strip() == "7"
