"""docs/guide.md and docs/examples/ stay true to the code: commands and flags exist as `--help`
spells them, model entries validate, and the blocks marked `<!-- test: cpu -->` run offline."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from oripid.models_registry.registry import load_registry

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide.md"
EXAMPLES = REPO / "docs" / "examples"
CPU_MARKER = "<!-- test: cpu -->"
BIN = Path(sys.executable).parent

FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
# `oripid SUB [ACTION] rest-of-command`; "oripid.yaml" and "oripid:" are not invocations.
INVOCATION = re.compile(r"(?:^|[\s(])oripid\s+([a-z][a-z0-9-]*)(?:\s+([a-z][a-z0-9-]*))?([^|;&#`\n]*)")
ACCELERATE = re.compile(r"accelerate\s+launch\b(.*?)(?:\s-m\s|$)", re.MULTILINE)
HF = re.compile(r"(?:^|[\s(])hf\s+([a-z][a-z0-9-]*)(?:\s+([a-z][a-z0-9-]*))?([^|;&#`\n]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9_-]*)")
# Minimum parameter counts of the denoisers of the example entries, as published (meta device).
DENOISER_PARAMS = {"sd35_large": 8.0e9, "flux_dev": 11.8e9, "flux_schnell": 11.8e9}


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, **kwargs)


@functools.cache
def _help(*words: str) -> str:
    """`--help` of an oripid, accelerate or hf command; "" when the command does not exist."""
    if words[0] == "oripid":
        args = [sys.executable, "-m", "oripid", *words[1:], "--help"]
    elif words[:2] == ("accelerate", "launch"):
        args = [sys.executable, "-m", "accelerate.commands.launch", "--help"]
    else:
        args = [str(BIN / words[0]), *words[1:], "--help"]
    result = _run(args)
    return result.stdout if result.returncode == 0 else ""


def _commands(text: str) -> list[str]:
    """Names listed under the first positional-arguments group of an argparse help text."""
    return re.findall(r"^    ([a-z][a-z0-9-]*)(?:\s|$)", text, re.MULTILINE)


def _guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _code(text: str) -> list[str]:
    """Every command-like piece of the guide: fenced blocks (continuations joined) and inline spans."""
    pieces = [body.replace("\\\n", " ") for _, body in FENCE.findall(text)]
    prose = FENCE.sub("", text)
    return pieces + INLINE.findall(prose)


def _cpu_blocks(text: str) -> list[str]:
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
        if before == CPU_MARKER:
            assert match.group(1) == "bash", f"{CPU_MARKER} must precede a ```bash block"
            blocks.append(match.group(2))
    return blocks


def _model_files() -> list[Path]:
    """Example YAML files that hold model entries (a mapping, or a list of them, with key/extends)."""
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        items = data if isinstance(data, list) else [data]
        if items and all(isinstance(i, dict) and ("key" in i or "extends" in i) for i in items):
            found.append(path)
    return found


def test_every_oripid_command_in_the_guide_exists_with_its_flags():
    subcommands = set(_commands(_help("oripid")))
    assert {"init", "plan", "build", "push", "models"} <= subcommands
    seen = set()
    for piece in _code(_guide()):
        for sub, action, rest in INVOCATION.findall(piece):
            assert sub in subcommands, f"`oripid {sub}` in the guide is not an oripid subcommand: {piece!r}"
            words = ["oripid", sub]
            actions = _commands(_help("oripid", sub)) if sub in ("models", "origins", "prompts") else []
            if actions:
                assert action in actions, f"`oripid {sub} {action}`: actions are {actions}"
                words.append(action)
            else:
                rest = f"{action} {rest}"
            text = _help(*words)
            for flag in FLAG.findall(rest):
                assert re.search(rf"{flag}\b", text), f"`{' '.join(words)}` has no {flag} ({piece!r})"
            seen.add(" ".join(words))
    # The guide walks through the whole pipeline.
    for command in ("oripid init", "oripid plan", "oripid build", "oripid validate", "oripid push"):
        assert command in seen


def test_links_of_the_guide_resolve():
    text = _guide()
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.MULTILINE)
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith("#"):
            assert target[1:] in slugs, f"no heading for link {target}"
        elif not target.startswith("http"):
            assert (GUIDE.parent / target.split("#")[0]).exists(), f"broken link {target}"


def test_accelerate_and_hf_commands_exist_with_their_flags():
    launch = _help("accelerate", "launch")
    assert "--num_processes" in launch
    texts = _code(_guide()) + [(EXAMPLES / "slurm.sh").read_text().replace("\\\n", " ")]
    checked = 0
    for piece in texts:
        for flags in ACCELERATE.findall(piece):
            for flag in FLAG.findall(flags):
                assert re.search(rf"{flag}\b", launch), f"`accelerate launch` has no {flag}: {piece!r}"
                checked += 1
        for group, sub, rest in HF.findall(piece):
            words = ("hf", group, sub) if sub else ("hf", group)
            text = _help(*words)
            if not text and sub:  # `hf download REPO FILE`: REPO is an argument, not a subcommand
                words, rest = ("hf", group), f"{sub} {rest}"
                text = _help(*words)
            assert text, f"`{' '.join(words)}` is not an hf command: {piece!r}"
            for flag in FLAG.findall(rest):
                assert re.search(rf"{flag}\b", text), f"`{' '.join(words)}` has no {flag}: {piece!r}"
            checked += 1
    assert checked > 5


def test_lone_flags_in_the_guide_belong_to_some_command():
    """A flag quoted on its own (`--per-origin N`) is spelled as one of the guide's commands spells it."""
    known = "\n".join(
        [_help("oripid", s) for s in _commands(_help("oripid"))]
        + [
            _help("oripid", g, a)
            for g in ("models", "origins", "prompts")
            for a in _commands(_help("oripid", g))
        ]
        + [_help("accelerate", "launch"), _help("hf", "repos", "settings")]
    )
    for span in INLINE.findall(FENCE.sub("", _guide())):
        if span.startswith("--"):
            flag = FLAG.match(span).group(1)
            assert re.search(rf"{flag}\b", known), f"{flag} is no flag of the commands the guide shows"


def test_example_model_entries_validate():
    files = _model_files()
    assert {p.name for p in files} >= {"sd35.yaml", "flux_img2img.yaml"}
    registry = load_registry(extra_files=files)
    from oripid.models_registry.architecture import build_component, component_class, parameter_count

    for key, minimum in DENOISER_PARAMS.items():
        entry = registry.get(key)
        for component in entry.architecture.values():
            component_class(component)  # library and class_name resolve
        denoiser = build_component(entry.architecture[entry.denoiser_name])  # meta device: no memory
        assert minimum < parameter_count(denoiser) < minimum * 1.1, key
    assert registry.get("sd35_large").tiny.family == "sd3"
    assert registry.get("flux_schnell").architecture["transformer"].config["guidance_embeds"] is False
    assert registry.get("flux_schnell").checkpoint == "black-forest-labs/FLUX.1-schnell"
    assert registry.get("sd3").checkpoint.startswith("stabilityai/stable-diffusion-3-medium")  # not replaced
    # FLUX.1 is guidance-distilled (one transformer call per step); flux_schnell inherits it.
    assert registry.get("flux_dev").classifier_free_guidance is False
    assert registry.get("flux_schnell").classifier_free_guidance is False
    assert registry.get("sd35_large").classifier_free_guidance is True


def test_flux_pipeline_runs_no_negative_prompt_pass_by_default():
    """The reason for `classifier_free_guidance: false`: true CFG is off unless asked for."""
    import inspect

    from diffusers import FluxImg2ImgPipeline

    parameters = inspect.signature(FluxImg2ImgPipeline.__call__).parameters
    assert parameters["true_cfg_scale"].default == 1.0
    assert parameters["negative_prompt"].default is None


def _plan_cli(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "oripid", "plan", "--workdir", str(workdir), *extra])


def test_estimate_rows_quoted_in_the_guide(tmp_path):
    """`plan --estimate` reads W/models: SD3.5 is counted, FLUX rows are n/a with a warning."""
    from tests.builders.workspace import make_workspace

    query = ["sd2", "sd35_large", "flux_dev", "flux_schnell"]
    workdir = make_workspace(
        tmp_path / "w",
        splits={"train": 1, "test": 1},
        config={"generate": {"query": {"models": query, "prompts_per_origin": 1}}},
    )
    config = yaml.safe_load((workdir / "oripid.yaml").read_text())
    config["models"], config["build"]["variant"] = {}, "real"  # the registry defaults, full size
    (workdir / "oripid.yaml").write_text(yaml.safe_dump(config))
    (workdir / "models").mkdir()
    for name in ("sd35.yaml", "flux_img2img.yaml"):
        shutil.copy(EXAMPLES / name, workdir / "models" / name)
    result = _plan_cli(workdir, "--estimate")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in result.stdout.splitlines()[2:]}
    guide = _guide()
    for model in query:
        tflop, hours = rows[("query", model)][2:]
        if model.startswith("flux"):
            assert (tflop, hours) == ("n/a", "n/a")
            assert (
                f"model '{model}': the estimate has no input recipe for FluxTransformer2DModel"
                in result.stderr
            )
        else:
            assert re.search(rf"query +{model} +5000 +[\d.]+ +{re.escape(tflop)} ", guide), model
    assert rows[("query", "sd2")][2] == "63.1"  # the SD2 figure of section 1.3 is unchanged


def test_plan_time_errors_quoted_in_the_guide(tmp_path):
    from tests.builders.workspace import make_workspace

    guide = _guide()
    workdir = make_workspace(
        tmp_path / "steps", config={"models": {"sd2": {"num_inference_steps": 2, "strength": 0.3}}}
    )
    result = _plan_cli(workdir)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("oripid: error: models.sd2:") and message in guide
    workdir = make_workspace(
        tmp_path / "twice",
        config={"generate": {"query": {"models": ["sd2", "sdxl", "sd2"], "prompts_per_origin": 1}}},
    )
    result = _plan_cli(workdir)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1].strip()
    assert message in guide, message


def test_config_sections_quoted_in_the_guide_validate():
    from oripid.config import DatasetConfig

    quoted = [yaml.safe_load(body) for lang, body in FENCE.findall(_guide()) if lang == "yaml"]
    sections = [q for q in quoted if isinstance(q, dict) and "key" not in q and "extends" not in q]
    assert any("prompts" in s for s in sections)
    for section in sections:
        DatasetConfig.model_validate(section)  # unknown or misspelt fields raise


def test_card_licence_of_added_and_built_in_models_is_as_the_guide_says():
    from oripid.builders.card import UNKNOWN_LICENCE, model_licence

    added = model_licence("flux_schnell", {"license": "apache-2.0"})
    assert (added.name, added.hub_id, added.note) == (
        "apache-2.0",
        "apache-2.0",
        "as declared by the model registry",
    )
    assert model_licence("my_model", {}) == UNKNOWN_LICENCE
    assert (UNKNOWN_LICENCE.hub_id, UNKNOWN_LICENCE.name) == ("other", "see the model card")
    registry = load_registry()
    declared = {
        key
        for key in registry.keys()
        if model_licence(key, {"license": registry.get(key).license}).note
        == "as declared by the model registry"
    }
    assert declared == set()  # built-in models keep oripid's table (SD3's custom licence maps to `other`)
    custom = model_licence("flux_dev", {"license": "flux-1-dev-non-commercial-license"})
    assert (custom.hub_id, custom.name) == ("other", "flux-1-dev-non-commercial-license")


def test_entries_quoted_in_the_guide_are_the_example_files():
    examples = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in _model_files()]
    quoted = [yaml.safe_load(body) for lang, body in FENCE.findall(_guide()) if lang == "yaml"]
    entries = [q for q in quoted if isinstance(q, dict) and "key" in q]
    assert entries, "the guide quotes no model entry"
    for entry in entries:
        assert any(entry == e or entry in e for e in examples if isinstance(e, (dict, list))), entry["key"]


def test_python_snippets_of_the_guide_compile():
    snippets = [textwrap.dedent(body) for lang, body in FENCE.findall(_guide()) if lang == "python"]
    assert snippets
    for snippet in snippets:
        compile(snippet, "docs/guide.md", "exec")


def test_an_unimportable_tiny_builder_does_not_fail_validation(tmp_path):
    text = (
        (EXAMPLES / "flux_img2img.yaml")
        .read_text()
        .replace("flux_tiny:build_flux_img2img", "nowhere:nothing")
    )
    path = tmp_path / "flux.yaml"
    path.write_text(text)
    assert load_registry(extra_files=[path]).get("flux_dev").tiny.builder == "nowhere:nothing"
    assert "nowhere" not in sys.modules


def test_flux_tiny_builder_runs_through_from_pretrained(monkeypatch):
    from PIL import Image

    from oripid.builders.generate import Img2ImgRunner, settings_for
    from oripid.models_registry.loader import load_pipeline

    monkeypatch.syspath_prepend(str(EXAMPLES))
    entry = load_registry(extra_files=[EXAMPLES / "flux_img2img.yaml"]).get("flux_schnell")
    pipeline = load_pipeline(entry, variant="tiny", device="cpu")
    assert type(pipeline).__name__ == entry.pipeline
    side = entry.tiny.resolution
    runner = Img2ImgRunner(pipeline, entry, settings_for(entry, None, side))
    assert runner.call_kwargs()["max_sequence_length"] == 256  # defaults.extra reaches the call
    (result,) = runner.generate([Image.new("RGB", (side, side), (90, 140, 200))], ["a watercolor"], [0])
    assert result.failure is None and result.image.size == (side, side)


def test_accelerate_config_and_slurm_script_are_well_formed():
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / "accelerate_multi_gpu.yaml"))
    assert str(config.distributed_type).endswith("MULTI_GPU") and config.num_machines == 1
    assert _run(["bash", "-n", str(EXAMPLES / "slurm.sh")]).returncode == 0
    script = (EXAMPLES / "slurm.sh").read_text()
    assert "-m oripid build --workdir" in script and "--machine_rank" in script


def test_cpu_blocks_of_the_guide_run(tmp_path):
    blocks = _cpu_blocks(_guide())
    assert blocks, f"the guide has no block marked {CPU_MARKER}"
    if shutil.which("oripid", path=str(BIN)) is None:
        pytest.skip(f"no oripid executable beside {sys.executable}")
    shutil.copytree(EXAMPLES, tmp_path / "docs" / "examples")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    for block in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"block failed:\n{block}\n{result.stderr[-3000:]}"
    assert time.perf_counter() - started < 60, "CPU blocks should stay quick"
    assert (tmp_path / "W" / "oripid.yaml").is_file()
    assert "sd35_large" in result.stdout and "flux_schnell" in result.stdout
