"""Offline, deterministic prompts from editable template files.

The folder (default: the package's `templates/`) holds `patterns.txt`, `edits.txt`,
`styles.txt` and `scenes.txt`, one entry per line, `#` for comments. For each origin a random
generator seeded from (seed, origin_id) shuffles the edits; prompt i uses edit i (so no two
prompts of one origin share an edit until the edits run out), a random pattern, style and scene.
The same seed and files give the same prompts on any machine; a changed file changes them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from oripid.errors import OripidError
from oripid.prompts.base import OriginRef

TEMPLATE_DIR = Path(__file__).parent / "templates"
PARTS = ("patterns", "edits", "styles", "scenes")


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise OripidError(f"template file {path} is missing: copy it from {TEMPLATE_DIR} and edit it")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    unique = list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    if not unique:
        raise OripidError(f"template file {path} has no entries: add one per line")
    return unique


class TemplateSource:
    name = "template"

    def __init__(self, template_dir: str | Path | None = None, seed: int = 0):
        self.template_dir = Path(template_dir) if template_dir else TEMPLATE_DIR
        self.seed = seed
        self.parts = {part: read_lines(self.template_dir / f"{part}.txt") for part in PARTS}
        for pattern in self.parts["patterns"]:
            if "{edit}" not in pattern:
                raise OripidError(
                    f"{self.template_dir / 'patterns.txt'}: pattern {pattern!r} has no {{edit}}"
                )
            try:
                pattern.format(edit="", style="", scene="")
            except (KeyError, IndexError, ValueError) as exc:
                raise OripidError(
                    f"{self.template_dir / 'patterns.txt'}: pattern {pattern!r} may use only "
                    f"{{edit}}, {{style}}, {{scene}} ({exc})"
                ) from None
        digest = hashlib.sha256()
        for part in PARTS:
            digest.update("\n".join(self.parts[part]).encode() + b"\0")
        self.templates_sha256 = digest.hexdigest()

    def settings(self) -> dict:
        return {
            "template_dir": str(self.template_dir),
            "templates_sha256": self.templates_sha256,
            "seed": self.seed,
            "sizes": {part: len(lines) for part, lines in self.parts.items()},
        }

    def candidates(self, origin_id: str) -> Iterator[str]:
        """An endless-until-exhausted stream of distinct prompts for one origin."""
        seed = hashlib.sha256(f"{self.seed}:{origin_id}".encode()).digest()
        rng = random.Random(int.from_bytes(seed[:8], "big"))
        edits = rng.sample(self.parts["edits"], len(self.parts["edits"]))
        seen: set[str] = set()
        space = 1
        for lines in self.parts.values():
            space *= len(lines)
        attempts = 0
        while len(seen) < space and attempts < 20 * space:
            edit = edits[len(seen) % len(edits)]
            prompt = rng.choice(self.parts["patterns"]).format(
                edit=edit, style=rng.choice(self.parts["styles"]), scene=rng.choice(self.parts["scenes"])
            )
            attempts += 1
            if prompt not in seen:
                seen.add(prompt)
                yield prompt

    def generate(self, origins: list[OriginRef], n: int) -> Iterator[tuple[str, Iterable[str]]]:
        for origin in origins:
            yield origin.origin_id, self.candidates(origin.origin_id)
