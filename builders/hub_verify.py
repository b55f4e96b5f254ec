"""Compare a local release with the files a Hub repository holds: sizes and content hashes.

The Hub reports, per file, its size and either the LFS sha256 of the content (large and binary
files) or the git blob id (regular files), so both can be checked without downloading anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 8 * 1024 * 1024


@dataclass
class LocalFile:
    path: str  # path in the repository (posix, relative to the workspace)
    local: Path
    size: int
    sha256: str | None = None
    git_sha1: str | None = None


def _hash(file: LocalFile) -> None:
    sha256 = hashlib.sha256()
    # The git blob id hashes a header then the content; computed in the same single read.
    git = hashlib.sha1(f"blob {file.size}\0".encode())
    with open(file.local, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha256.update(chunk)
            git.update(chunk)
    file.sha256, file.git_sha1 = sha256.hexdigest(), git.hexdigest()


def hash_files(files: Iterable[LocalFile], *, workers: int = 4) -> None:
    """Fill sha256 and git_sha1 of each file (hashlib releases the GIL: threads help on big files)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_hash, [f for f in files if f.sha256 is None]))


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    size_mismatch: list[tuple[str, int, int]] = field(default_factory=list)  # path, local, remote
    hash_mismatch: list[str] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)  # remote entry without a usable hash
    unexpected: list[str] = field(default_factory=list)  # on the Hub, not in the release

    @property
    def ok(self) -> bool:
        return not (self.missing or self.size_mismatch or self.hash_mismatch or self.unverifiable)

    def summary(self) -> str:
        parts = [f"{self.checked} files checked"]
        for label, items in (
            ("missing", self.missing),
            ("different size", [p for p, _, _ in self.size_mismatch]),
            ("different content", self.hash_mismatch),
            ("without a hash to check", self.unverifiable),
            ("on the Hub but not in the release", self.unexpected),
        ):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                parts.append(f"{len(items)} {label} ({shown})")
        return "; ".join(parts)


def verify_remote(
    files: Iterable[LocalFile], remote: Mapping[str, object], *, ignore: set[str]
) -> VerifyReport:
    """Check every local file against the remote listing (`RepoFile`s by path from list_repo_tree)."""
    report = VerifyReport()
    local_paths = set()
    for file in files:
        local_paths.add(file.path)
        report.checked += 1
        entry = remote.get(file.path)
        if entry is None:
            report.missing.append(file.path)
            continue
        if entry.size != file.size:
            report.size_mismatch.append((file.path, file.size, entry.size))
            continue
        lfs = getattr(entry, "lfs", None)
        if lfs is not None:
            same = lfs.sha256 == file.sha256
        elif getattr(entry, "blob_id", None):
            same = entry.blob_id == file.git_sha1
        else:
            report.unverifiable.append(file.path)
            continue
        if not same:
            report.hash_mismatch.append(file.path)
    report.unexpected = sorted(set(remote) - local_paths - ignore)
    return report
