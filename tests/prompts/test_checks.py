"""Prompt checks: empty, duplicate, token limits under each policy, exact counts with a tokenizer."""

from __future__ import annotations

import pytest

from oripid.errors import OripidError
from oripid.prompts.checks import CheckConfig, PromptChecker, estimate_tokens

LONG = " ".join(["a luminous watercolour landscape with extraordinary atmospheric perspective"] * 8)


def test_estimate_over_counts_plain_english():
    # Real CLIP gives 5 + 2 specials for this; the estimate must not be lower.
    assert estimate_tokens("a cat in the snow", 2) >= 7
    assert estimate_tokens("", 2) == 2
    assert estimate_tokens(LONG, 2) > 77


def test_empty_and_duplicates_are_dropped_and_counted():
    checker = PromptChecker(CheckConfig())
    kept = checker.check("T0", ["oil painting", "  ", "Oil  painting", "snowy night", "pixel art"], 2)
    assert [p for p, _ in kept] == ["oil painting", "snowy night"]
    assert checker.report.dropped == {"empty": 1, "duplicate": 1, "surplus": 1}
    assert checker.check("T1", ["only one"], 2) == [("only one", False)]
    assert checker.report.short_origins == {"T1": 1}


@pytest.mark.parametrize(
    ("policy", "kept_long", "truncated"),
    [("warn", True, False), ("truncate", True, True), ("reject", False, False)],
)
def test_length_policies(policy, kept_long, truncated):
    checker = PromptChecker(CheckConfig(length_policy=policy))
    kept = checker.check("T0", [LONG, "a short prompt"], 2)
    assert checker.report.too_long["clip"] == 1 and checker.report.too_long["t5_kandinsky3"] == 1
    assert checker.report.too_long.get("t5_sd3", 0) == 0
    texts = [p for p, _ in kept]
    assert (len(texts) == 2) == kept_long
    if policy == "truncate":
        assert kept[0][1] is True and not checker.over(texts[0]) and LONG.startswith(texts[0])
    if policy == "warn":
        assert texts[0] == LONG and kept[0][1] is truncated


def test_exact_counts_with_a_local_tokenizer(tmp_path):
    from tests.prompts.prompts_tiny_models import save_tiny_writer

    folder = save_tiny_writer(tmp_path / "tok")
    # The tiny tokenizer has one token per known word and no special tokens: 10 words, limit 6.
    checker = PromptChecker(
        CheckConfig(targets={"clip": 6}, tokenizers={"clip": str(folder)}, length_policy="truncate")
    )
    assert checker.settings()["counting"] == {"clip": "tokenizer"}
    words = "snow sunset oil painting neon forest winter pixel art fog"
    assert checker.counters[0].count(words) == 10
    ((text, cut),) = checker.check("T0", [words], 1)
    assert cut and text == "snow sunset oil painting neon forest"


def test_missing_tokenizer_fails_loudly(tmp_path):
    with pytest.raises(OripidError, match="did not load"):
        PromptChecker(CheckConfig(tokenizers={"clip": str(tmp_path / "nope")}))
    with pytest.raises(OripidError, match="unknown targets"):
        PromptChecker(CheckConfig(tokenizers={"bert": str(tmp_path)}))
