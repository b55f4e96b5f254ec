"""A small ingested workspace shared by the prompt tests (real photos from the demo set)."""

from __future__ import annotations

import shutil

import pytest

from oripid.builders.ingest import ingest_origins
from oripid.builders.origins_samples import sample_origins_dir

PHOTOS = ("chelsea", "coffee", "rocket", "retina")


@pytest.fixture(scope="session")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts_ws")
    src = root / "src"
    src.mkdir()
    for name in PHOTOS:
        shutil.copy(sample_origins_dir() / f"{name}.jpg", src / f"{name}.jpg")
    ingest_origins(src, root / "template", progress=False, workers=1)
    return root


@pytest.fixture
def workspace(ingested, tmp_path):
    """A fresh copy of the ingested workspace, so a test's outputs never leak into another's."""
    work = tmp_path / "work"
    shutil.copytree(ingested / "template", work)
    return work
