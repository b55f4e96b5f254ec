"""`oripid demo`: the whole pipeline on the embedded default, offline, on a CPU, in minutes.

Sample origins shipped in the package -> template prompts -> splits -> plan -> build with the
tiny variants of all seven models in 2 Accelerate processes -> VAE features -> validation ->
dataset card -> a release folder in Hub layout (what `oripid push` uploads). Every stage skips work already done, so a rerun
resumes and finishes at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from oripid.builders import layout
from oripid.builders.plan import is_done, make_plan, read_plan, write_plan
from oripid.config import load_config
from oripid.errors import OripidError

SAMPLE_ORIGINS = Path(__file__).resolve().parent.parent / "builders" / "assets" / "origins"

DEMO_CONFIG = {
    "name": "oripid-demo",
    "seed": 0,
    "origins": {"id_pattern": "T{index:06d}", "min_side": 64},
    "prompts": {"source": "template", "per_origin": 4},
    "splits": {"train": 5, "test": 4, "distractor": "rest", "test_queries_per_model": 4},
    "generate": {
        "train": {"models": ["sd2"], "prompts_per_origin": 4},
        "query": {
            "models": ["sd2", "sdxl", "opendalle", "colorfulxl", "kandinsky3", "sd3", "kolors"],
            "prompts_per_origin": 1,
        },
    },
    "models": {
        key: {"num_inference_steps": 4, "strength": 0.4}
        for key in ["sd2", "sdxl", "opendalle", "colorfulxl", "kandinsky3", "sd3", "kolors"]
    },
    "image": {"format": "jpg", "quality": 95},
    "shards": {"max_samples": 8},
    "build": {"variant": "tiny", "batch_size": 4},
    # Random-weight tiny models carry no learnable origin signal, so the demo reports the reference
    # evaluation without mAP thresholds; integrity and leakage still gate it. Real builds keep the
    # thresholds of `oripid init`.
    "validation": {
        "robustness_queries_per_model": 4,
        "thresholds": {"min_map_seen": None, "min_map_unseen": None, "min_gain_over_identity": None},
    },
}


def sample_origins_dir() -> Path:
    """The shipped sample origins, from a source checkout or an installed wheel."""
    from importlib.resources import files

    installed = Path(str(files("oripid.builders") / "assets" / "origins"))
    return installed if installed.is_dir() else SAMPLE_ORIGINS


def _stage(name: str, started: float) -> None:
    print(f"[demo {time.perf_counter() - started:6.1f}s] {name}", flush=True)


def run_demo(workdir: str | Path = "demo-workdir", processes: int = 2) -> dict:
    """Run every stage on the embedded default; returns where everything is."""
    from oripid.builders.ingest import ingest_origins
    from oripid.builders.publish import check_validation
    from oripid.builders.release import export_release
    from oripid.builders.splits import split_origins
    from oripid.builders.status import build_status
    from oripid.eval.features import missing_features
    from oripid.eval.validate import read_report, validate
    from oripid.launch import run_launched
    from oripid.prompts.generate import generate_prompts

    started = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / layout.CONFIG
    if not config_path.exists():
        config_path.write_text(
            "# oripid demo config: tiny offline models, a few origins\n" + yaml.safe_dump(DEMO_CONFIG)
        )
    config = load_config(config_path)

    # 1. Origins, prompts, splits.
    _stage("ingest the sample origins", started)
    ingest_origins(sample_origins_dir(), workdir, **{**config.origins.model_dump(), "progress": False})
    _stage("template prompts", started)
    generate_prompts(workdir, **config.prompts.model_dump())
    _stage("splits", started)
    split_origins(workdir, **config.splits.model_dump())

    # 2. Plan, then build in `processes` Accelerate processes (a finished plan is kept as is).
    plan = make_plan(config, workdir)
    plan_path = workdir / layout.PLAN
    if not plan_path.is_file() or read_plan(workdir).to_json() != plan.to_json():
        write_plan(plan, workdir)
    pending = [shard for shard in plan.shards if not is_done(workdir, shard)]
    _stage(
        f"build {len(pending)} of {len(plan.shards)} shards ({plan.sample_count()} samples), {processes} processes",
        started,
    )
    if pending:  # starting processes only to find nothing to do costs seconds
        run_launched(["build", "--workdir", str(workdir)], processes)

    # 3. Features, then the validation gate, then the card and the release folder in Hub layout.
    to_embed = missing_features(workdir)
    _stage(f"VAE features of {len(to_embed)} shards, {processes} processes", started)
    if to_embed:
        run_launched(["features", "--workdir", str(workdir)], processes)
    _stage("validate (integrity, leakage, reference linear-W evaluation)", started)
    try:  # a passing report of exactly these shards is kept: a rerun finishes at once
        check_validation(workdir)
        report = read_report(workdir)
    except OripidError:
        report = validate(workdir)
    if not report["passed"]:
        failed = [name for name, check in report["checks"].items() if not check["passed"]]
        raise OripidError(
            f"validation failed ({', '.join(failed)}): see {workdir / layout.VALIDATION_DIR}/report.md"
        )
    _stage("dataset card and release folder", started)
    release = export_release(workdir, workdir / "release")

    _stage("done", started)
    return {
        "workdir": str(workdir),
        "release": str(release),
        "report": str(workdir / layout.VALIDATION_DIR / "report.md"),
        "plots": [str(workdir / layout.VALIDATION_DIR / name) for name in report.get("plots", [])],
        "metrics": report["metrics"],
        "status": build_status(workdir),
        "seconds": time.perf_counter() - started,
    }
