"""Where the benchmarks write their figures: one `## ` section of docs/benchmarks.md each."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_docs_section(title: str, block: str, docs: Path = DOCS) -> None:
    """Put `block` (which starts with the `title` heading) in place of that section, or append it."""
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    if title in text:  # replace only this section, up to the next "## " heading
        head, _, rest = text.partition(title)
        tail = rest.split("\n## ", 1)
        text = head + block + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    docs.write_text(text)
