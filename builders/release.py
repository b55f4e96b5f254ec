"""Export the release into a folder in Hub layout: the local twin of `oripid push`.

The folder holds exactly what a push uploads (the card, shards, indexes, stats, validation
report), behind the same validation gate, so `datasets.load_dataset(folder, "<model>")` reads it
as it would read the Hub repository.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from oripid.builders.card import render_card
from oripid.builders.publish import check_validation, release_files


def export_release(workdir: str | Path, dest: str | Path, include_features: bool = False) -> Path:
    """Copy (hard-link where possible) the validated release of `workdir` into `dest`."""
    workdir, dest = Path(workdir), Path(dest)
    check_validation(workdir)
    render_card(workdir=workdir)
    for item in release_files(workdir, include_features=include_features):
        target = dest / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if target.stat().st_size == item.size and os.path.samefile(target, item.local):
                continue
            target.unlink()
        try:
            os.link(item.local, target)
        except OSError:  # another filesystem
            shutil.copy2(item.local, target)
    return dest
