"""Checks every prompt source goes through: non-empty, unique per origin, within token limits.

Token limits are those of the target models' text encoders, special tokens included:
CLIP 77 (SD2, SDXL, SD3's CLIP encoders), SD3's T5 `max_sequence_length` 256 (diffusers'
default), Kandinsky-3's T5 128. With a tokenizer folder for a target the count is exact
(`transformers.AutoTokenizer`, offline). Without one it is an ESTIMATE, documented here:
each word, number or punctuation run (CLIP's split pattern) counts ceil(utf8 bytes / 3)
tokens, at least 1, plus the special tokens (2 for CLIP, 1 for T5). On English prompts this
over-counts real CLIP and T5 tokenizers (measured about 1.3-2x: common words are one token),
so "fits" is reliable and "too long" may be a false alarm; rare strings (codes, foreign
scripts) can still be under-counted. Give tokenizer paths when the limit matters.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from oripid.errors import OripidError

# CLIP's pre-tokenizer split (letters, digits one by one, other runs), case-folded.
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", re.UNICODE)
DEFAULT_TARGETS = {"clip": 77, "t5_sd3": 256, "t5_kandinsky3": 128}
SPECIAL_TOKENS = {"clip": 2, "t5": 1}


class CheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_TARGETS),
        description="target name -> token limit incl. special tokens; names starting with 't5' count 1 special token, others 2",
    )
    tokenizers: dict[str, str] = Field(
        default_factory=dict, description="target name -> local tokenizer folder"
    )
    length_policy: Literal["warn", "truncate", "reject"] = "warn"


def estimate_tokens(text: str, specials: int) -> int:
    return specials + sum(max(1, math.ceil(len(p.encode()) / 3)) for p in _PIECES.findall(text.lower()))


class TokenCounter:
    """Counts tokens for one target: exactly with a tokenizer folder, else by the estimate."""

    def __init__(self, target: str, limit: int, tokenizer_path: str | None = None):
        self.target, self.limit = target, limit
        self.specials = SPECIAL_TOKENS["t5" if target.lower().startswith("t5") else "clip"]
        self._tokenizer = None
        self.exact = tokenizer_path is not None
        if tokenizer_path is not None:
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
            except Exception as exc:
                raise OripidError(
                    f"prompts checks: tokenizer for target {target!r} at {tokenizer_path} did not load ({exc}); "
                    "give a local tokenizer folder or drop it to use the estimate"
                ) from None

    def count(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer(text, truncation=False)["input_ids"])
        return estimate_tokens(text, self.specials)


@dataclass
class CheckReport:
    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> prompts
    too_long: Counter = field(default_factory=Counter)  # target -> prompts over its limit
    truncated: int = 0
    short_origins: dict[str, int] = field(default_factory=dict)  # origin -> prompts kept (< N)

    def as_dict(self) -> dict:
        return {
            "generated": self.generated,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "too_long": dict(sorted(self.too_long.items())),
            "truncated": self.truncated,
            "short_origins": len(self.short_origins),
            "short_examples": dict(sorted(self.short_origins.items())[:50]),
        }


class PromptChecker:
    def __init__(self, config: CheckConfig):
        self.config = config
        unknown = set(config.tokenizers) - set(config.targets)
        if unknown:
            raise OripidError(
                f"prompts checks: tokenizers given for unknown targets {sorted(unknown)}; add them to targets"
            )
        self.counters = [TokenCounter(t, lim, config.tokenizers.get(t)) for t, lim in config.targets.items()]
        self.report = CheckReport()

    def settings(self) -> dict:
        return {
            "targets": self.config.targets,
            "length_policy": self.config.length_policy,
            "counting": {c.target: "tokenizer" if c.exact else "estimate" for c in self.counters},
        }

    def over(self, text: str) -> list[str]:
        return [c.target for c in self.counters if c.count(text) > c.limit]

    def truncate(self, text: str) -> str:
        """Drop trailing words until every target fits (never below one word)."""
        words = text.split()
        while len(words) > 1 and self.over(" ".join(words)):
            words.pop()
        return " ".join(words).rstrip(" ,;:-")

    def check(self, origin_id: str, candidates: Iterable[str], n: int) -> list[tuple[str, bool]]:
        """The first `n` valid prompts as (prompt, truncated); every drop is counted by reason.

        A lazy iterator is consumed only as far as needed; the rest of a list (a file holding
        more than `n` prompts for an origin) is counted as "surplus".
        """
        kept: list[tuple[str, bool]] = []
        seen: set[str] = set()
        for consumed, raw in enumerate(candidates, start=1):
            if len(kept) >= n:
                if isinstance(candidates, Sized):
                    self.report.dropped["surplus"] += len(candidates) - consumed + 1
                break
            self.report.generated += 1
            text = " ".join(str(raw).split())  # one line, single spaces
            if not text:
                self.report.dropped["empty"] += 1
                continue
            truncated = False
            over = self.over(text)
            for target in over:
                self.report.too_long[target] += 1
            if over and self.config.length_policy == "reject":
                self.report.dropped["too_long"] += 1
                continue
            if over and self.config.length_policy == "truncate":
                text, truncated = self.truncate(text), True
            key = text.casefold()
            if key in seen:
                self.report.dropped["duplicate"] += 1
                continue
            seen.add(key)
            kept.append((text, truncated))
            self.report.truncated += truncated
        self.report.kept += len(kept)
        if len(kept) < n:
            self.report.short_origins[origin_id] = len(kept)
        return kept
