"""Checks every prompt source goes through: non-empty, unique per origin, within token limits.

Token limits are those of the target models' text encoders, special tokens included:
CLIP 77 (SD2, SDXL, SD3's CLIP encoders), SD3's T5 `max_sequence_length` 256 (diffusers'
default), Kandinsky-3's T5 128. Each target's count is exact (`transformers.AutoTokenizer`,
offline) when a tokenizer is found, first match wins:
1. `tokenizers: {target: folder}` in the config;
2. (`use_cached_tokenizers`, on by default) the tokenizer subfolder of the registry checkpoint
   that uses it (`CACHED_TOKENIZERS`), when the checkpoint is a local folder or is already in
   the Hugging Face cache. Only the cache is read (`local_files_only`): nothing is downloaded.
Otherwise the count is an ESTIMATE, documented here: each word, number or punctuation run
(CLIP's split pattern) counts ceil(utf8 bytes / 3) tokens, at least 1, plus the special tokens
(2 for CLIP, 1 for T5). On English prompts this over-counts real CLIP and T5 tokenizers
(measured about 1.3-2x: common words are one token), so "fits" is reliable and "too long" may
be a false alarm; rare strings (codes, foreign scripts) can still be under-counted. The
settings and report say, per target, which count was used (`counting_source`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oripid.errors import OripidError

# CLIP's pre-tokenizer split (letters, digits one by one, other runs), case-folded.
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", re.UNICODE)
DEFAULT_TARGETS = {"clip": 77, "t5_sd3": 256, "t5_kandinsky3": 128}
SPECIAL_TOKENS = {"clip": 2, "t5": 1}
# Where a default target's tokenizer lives: (registry key, checkpoint subfolder), tried in order.
# SD2's CLIP BPE is the one SDXL and SD3 use for their first encoder, so SDXL's also serves.
CACHED_TOKENIZERS: dict[str, tuple[tuple[str, str], ...]] = {
    "clip": (("sd2", "tokenizer"), ("sdxl", "tokenizer")),
    "t5_sd3": (("sd3", "tokenizer_3"),),
    "t5_kandinsky3": (("kandinsky3", "tokenizer"),),
}


class CheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_TARGETS),
        description="target name -> token limit incl. special tokens; names starting with 't5' count 1 special token, others 2",
    )
    tokenizers: dict[str, str] = Field(
        default_factory=dict, description="target name -> local tokenizer folder (wins over the cache)"
    )
    use_cached_tokenizers: bool = Field(
        True,
        description="count exactly with the registry checkpoints' tokenizers when they are already "
        "in the Hugging Face cache (never downloads)",
    )
    length_policy: Literal["warn", "truncate", "reject"] = "warn"


def estimate_tokens(text: str, specials: int) -> int:
    return specials + sum(max(1, math.ceil(len(p.encode()) / 3)) for p in _PIECES.findall(text.lower()))


@dataclass(frozen=True)
class CountingSource:
    """Where one target's token count comes from, as the settings and the report record it."""

    kind: Literal["explicit", "hf_cache", "checkpoint_folder", "estimate"]
    path: str | None = None  # explicit folder as given, or the registry's local checkpoint folder
    model: str | None = None  # registry key of the checkpoint
    repo: str | None = None
    revision: str | None = None  # the commit the cache resolved, not the requested branch
    subfolder: str | None = None
    note: str | None = None  # why the count is an estimate

    @property
    def exact(self) -> bool:
        return self.kind != "estimate"

    def as_dict(self) -> dict[str, Any]:
        fields = {
            "path": self.path,
            "model": self.model,
            "repo": self.repo,
            "revision": self.revision,
            "subfolder": self.subfolder,
            "note": self.note,
        }
        return {"exact": self.exact, "source": self.kind} | {k: v for k, v in fields.items() if v is not None}


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class TokenCounter:
    """Counts tokens for one target: exactly with a tokenizer, else by the estimate."""

    def __init__(
        self,
        target: str,
        limit: int,
        tokenizer_path: str | None = None,
        *,
        cached: tuple[Any, CountingSource] | None = None,
    ):
        self.target, self.limit = target, limit
        self.specials = SPECIAL_TOKENS["t5" if target.lower().startswith("t5") else "clip"]
        self._tokenizer = None
        self.source = CountingSource("estimate")
        if tokenizer_path is not None:
            try:
                self._tokenizer = load_tokenizer(tokenizer_path)
            except Exception as exc:
                raise OripidError(
                    f"prompts checks: tokenizer for target {target!r} at {tokenizer_path} did not load ({exc}); "
                    "give a local tokenizer folder or drop it to use the estimate"
                ) from None
            self.source = CountingSource("explicit", path=str(tokenizer_path))
        elif cached is not None:
            self._tokenizer, self.source = cached

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def count(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer(text, truncation=False)["input_ids"])
        return estimate_tokens(text, self.specials)


def _cached_snapshot(repo: str, revision: str | None, subfolder: str) -> Path | None:
    """The cached snapshot folder of `repo` at `revision` holding `subfolder`, or None.

    `local_files_only` makes huggingface_hub read only the cache (refs/<revision> -> snapshots/),
    so this never opens a connection, whatever HF_HUB_OFFLINE says.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo, revision=revision, allow_patterns=[f"{subfolder}/*"], local_files_only=True
        )
    except (LocalEntryNotFoundError, HFValidationError):  # not cached (or incomplete), or not a repo id
        return None
    # The snapshot may hold other components only (e.g. a pipeline downloaded in parts).
    return Path(folder) if (Path(folder) / subfolder).is_dir() else None


def _checkpoint_tokenizer(entry: Any, subfolder: str) -> tuple[Path, CountingSource] | None:
    """Where `entry`'s tokenizer subfolder is on disk: in a local checkpoint or in the HF cache."""
    if Path(entry.checkpoint).is_dir():
        folder = Path(entry.checkpoint) / subfolder
        if not folder.is_dir():
            return None
        return folder, CountingSource(
            "checkpoint_folder", path=str(folder), model=entry.key, subfolder=subfolder
        )
    snapshot = _cached_snapshot(entry.checkpoint, entry.revision, subfolder)
    if snapshot is None:
        return None
    # The cache path is machine-specific; repo@commit is what identifies the tokenizer.
    source = CountingSource(
        "hf_cache", model=entry.key, repo=entry.checkpoint, revision=snapshot.name, subfolder=subfolder
    )
    return snapshot / subfolder, source


def _how_to_fix(target: str) -> str:
    return f"set checks.tokenizers.{target} (CLI: --tokenizer {target}=PATH)"


def _no_checkpoint(target: str) -> CountingSource:
    return CountingSource("estimate", note=f"no registry checkpoint for this target; {_how_to_fix(target)}")


def find_cached_tokenizer(target: str, registry: Any) -> tuple[Any, CountingSource]:
    """The first of `CACHED_TOKENIZERS[target]` already on disk, loaded; else (None, an estimate
    source whose note says what was looked for and how to get an exact count)."""
    failures = []
    for key, subfolder in CACHED_TOKENIZERS.get(target, ()):
        entry = registry.entries.get(key)
        if entry is None:  # a registry without this model (plugins can only add, but be safe)
            continue
        found = _checkpoint_tokenizer(entry, subfolder)
        if found is None:
            where = "missing" if Path(entry.checkpoint).is_dir() else "not in the Hugging Face cache"
            failures.append(f"{entry.checkpoint}/{subfolder} {where}")
            continue
        folder, source = found
        try:
            return load_tokenizer(folder), source
        except Exception as exc:  # a broken or partial cache entry: fall back, and say why
            failures.append(f"{entry.checkpoint}/{subfolder} did not load ({type(exc).__name__}: {exc})")
    if not failures:
        return None, _no_checkpoint(target)
    return None, CountingSource(
        "estimate", note="; ".join(failures) + f"; download it or {_how_to_fix(target)}"
    )


@dataclass
class CheckReport:
    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> prompts
    too_long: Counter = field(default_factory=Counter)  # target -> prompts over its limit
    truncated: int = 0
    short_origins: dict[str, int] = field(default_factory=dict)  # origin -> prompts kept (< N)
    counting_source: dict[str, dict] = field(default_factory=dict)  # target -> CountingSource.as_dict()

    def as_dict(self) -> dict:
        return {
            "generated": self.generated,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "too_long": dict(sorted(self.too_long.items())),
            "truncated": self.truncated,
            "short_origins": len(self.short_origins),
            "short_examples": dict(sorted(self.short_origins.items())[:50]),
            "counting_source": self.counting_source,
        }


class PromptChecker:
    """Runs the checks; `workdir` lets the workspace's model registry overrides (another mirror,
    a local checkpoint) decide where cached tokenizers are looked for."""

    def __init__(self, config: CheckConfig, workdir: str | Path | None = None):
        self.config = config
        unknown = set(config.tokenizers) - set(config.targets)
        if unknown:
            raise OripidError(
                f"prompts checks: tokenizers given for unknown targets {sorted(unknown)}; add them to targets"
            )
        self._workdir = workdir
        self._registry: Any = None
        self.counters = [self._counter(t, lim) for t, lim in config.targets.items()]
        self.report = CheckReport(counting_source=self.counting_source())

    def _counter(self, target: str, limit: int) -> TokenCounter:
        if target in self.config.tokenizers:
            return TokenCounter(target, limit, self.config.tokenizers[target])
        if not self.config.use_cached_tokenizers:
            off = CountingSource("estimate", note="use_cached_tokenizers is off")
            return TokenCounter(target, limit, cached=(None, off))
        if target not in CACHED_TOKENIZERS:  # an added target: skip the registry (it imports diffusers)
            return TokenCounter(target, limit, cached=(None, _no_checkpoint(target)))
        return TokenCounter(target, limit, cached=find_cached_tokenizer(target, self._load_registry()))

    def _load_registry(self) -> Any:
        if self._registry is None:
            from oripid.models_registry.registry import load_registry

            self._registry = load_registry(self._workdir)
        return self._registry

    def counting_source(self) -> dict[str, dict]:
        return {c.target: c.source.as_dict() for c in self.counters}

    def settings(self) -> dict:
        return {
            "targets": self.config.targets,
            "length_policy": self.config.length_policy,
            "counting": {c.target: "tokenizer" if c.exact else "estimate" for c in self.counters},
            "counting_source": self.counting_source(),
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
