"""`oripid features | validate`: embed the shards, then gate them before publishing."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    features = subparsers.add_parser(
        "features", help="VAE features of every shard (also under `accelerate launch -m oripid`)"
    )
    features.add_argument("--workdir", required=True)
    features.set_defaults(func=_features)

    validate = subparsers.add_parser(
        "validate",
        help="integrity, leakage and the reference linear-W evaluation; writes validation/report.*",
    )
    validate.add_argument("--workdir", required=True)
    validate.set_defaults(func=_validate)


def _feature_settings(workdir: str):
    from oripid.builders import layout
    from oripid.config import load_config
    from oripid.eval.features import FeatureSettings

    config = load_config(f"{workdir}/{layout.CONFIG}")
    v = config.validation
    return FeatureSettings(
        v.vae_model, config.build.variant, latent=v.latent, batch_size=v.feature_batch_size
    )


def _features(args: argparse.Namespace) -> int:
    from oripid.eval.features import extract_features

    count = extract_features(args.workdir, _feature_settings(args.workdir))
    print(f"features of {count} images written under {args.workdir}/features")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from oripid.builders import layout
    from oripid.eval.validate import validate

    report = validate(args.workdir)
    for name, check in report["checks"].items():
        print(f"{name}: {'passed' if check['passed'] else 'FAILED'}")
        for message in check.get("messages", []):
            print(f"  - {message}")
    print(f"report: {args.workdir}/{layout.VALIDATION_DIR}/report.md")
    return 0 if report["passed"] else 1
