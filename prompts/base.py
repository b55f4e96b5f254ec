"""What every prompt source shares: the origin it writes for, its interface, output parsing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class OriginRef:
    origin_id: str
    image: Path  # the normalised RGB origin written by ingest
    source: str  # the manifest's source reference (file names are matched against it)
    sha256: str  # content hash: part of cache keys and seeds


class PromptSource(Protocol):
    """A source yields, for each origin it was given, candidate prompts (any order of origins).

    Candidates may hold more than `n`, blanks or repeats: the checks keep the first `n` valid.
    Construction fails loudly when a dependency, file, model or key is missing.
    """

    name: str

    def settings(self) -> dict: ...

    def generate(self, origins: list[OriginRef], n: int) -> Iterator[tuple[str, Iterable[str]]]: ...


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.):]|\(\d+\))\s*")


def parse_prompt_lines(text: str) -> list[str]:
    """Prompts from free model text: a JSON list or {"prompts": [...]}, else one per line with
    bullets and numbering removed. Blank lines are dropped; the checks do the rest."""
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            value = json.loads(stripped)
            items = value.get("prompts", []) if isinstance(value, dict) else value
            if isinstance(items, list):
                return [str(item).strip() for item in items if str(item).strip()]
        except json.JSONDecodeError:
            pass  # fall through: treat it as lines
    lines = (_BULLET.sub("", line).strip().strip('"').strip() for line in text.splitlines())
    return [line for line in lines if line]
