"""Publishing: `push_dataset(workdir=..., repo_id=...)` uploads the release to the Hub and verifies it.

The release is a fixed subset of the workspace, uploaded in place (no copy of the shards):

    README.md                                  the rendered dataset card
    data/<split>/<model>/*.tar                 WebDataset shards
    data/<split>/<model>/*.parquet             their indexes
    data/<split>/<model>/*.json                their build stats (counts, failures, settings)
    validation/report.json, report.md, *.png   the validation report the push was gated on
    features/**                                only with include_features=True

Not uploaded: oripid.yaml, plan.json, origins/ and prompts/ (build internals; the prompt of every
image is in its json member), partial files. The token comes from the standard Hugging Face login
(`hf auth login`) or HF_TOKEN; oripid never prints, logs or writes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import filter_repo_objects

from oripid.builders import layout
from oripid.builders.card import render_card, scan_shards
from oripid.builders.hub_verify import LocalFile, VerifyReport, hash_files, verify_remote
from oripid.errors import OripidError

logger = logging.getLogger(__name__)

RELEASE_PATTERNS = [
    layout.CARD,
    f"{layout.DATA_DIR}/*.tar",
    f"{layout.DATA_DIR}/*.parquet",
    f"{layout.DATA_DIR}/*.json",
    f"{layout.VALIDATION_DIR}/report.json",
    f"{layout.VALIDATION_DIR}/report.md",
    f"{layout.VALIDATION_DIR}/*.png",
]
FEATURES_PATTERNS = [f"{layout.FEATURES_DIR}/*"]
# Never part of a release, whatever the patterns match: unfinished shards and hidden files.
IGNORE_PATTERNS = ["*.partial", "*/.*", ".*"]
# Files the Hub manages itself and a re-push may find.
HUB_MANAGED = {".gitattributes"}

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass
class PushResult:
    repo_id: str
    files: list[LocalFile]
    dry_run: bool
    url: str | None = None
    created: bool = False
    public: bool = False
    commit: str | None = None
    verification: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id or "") or ".." in repo_id or "--" in repo_id or repo_id.endswith((".", "-")):
        raise OripidError(
            f"repository id {repo_id!r} is not of the form <user or organisation>/<name>: "
            "pass e.g. --repo alice/oripid-tiny (letters, digits, '.', '_' and '-')"
        )


def check_validation(workdir: Path) -> dict:
    """The gate: a passing validation report whose digest is the shard index digest now."""
    path = Path(workdir) / layout.VALIDATION_DIR / "report.json"
    if not path.exists():
        raise OripidError(f"no validation report at {path}: run `oripid validate --workdir {workdir}` first")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise OripidError(
            f"{path} is not valid JSON ({exc}): rerun `oripid validate --workdir {workdir}`"
        ) from exc
    if report.get("passed") is not True:
        failed = [name for name, c in (report.get("checks") or {}).items() if not (c or {}).get("passed")]
        raise OripidError(
            f"the validation report {path} did not pass (failed checks: {', '.join(failed) or 'see report'}): "
            f"fix the data (see {path.with_suffix('.md').name}), then rerun `oripid validate --workdir {workdir}`"
        )
    current = layout.shard_index_digest(workdir)
    if report.get("digest") != current:
        raise OripidError(
            f"the validation report is stale: it validated shard digest {str(report.get('digest'))[:16]}, the "
            f"shards now have {current[:16]}: rerun `oripid validate --workdir {workdir}`"
        )
    return report


def release_files(workdir: Path, *, include_features: bool = False) -> list[LocalFile]:
    """The files a push uploads, with sizes (no hashing: cheap enough for a dry run)."""
    root = Path(workdir)
    patterns = RELEASE_PATTERNS + (FEATURES_PATTERNS if include_features else [])
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    selected = filter_repo_objects(paths, allow_patterns=patterns, ignore_patterns=IGNORE_PATTERNS)
    return [LocalFile(path=p, local=root / p, size=(root / p).stat().st_size) for p in selected]


def _client(endpoint: str | None) -> tuple[HfApi, str, set[str]]:
    token = get_token()
    if not token:
        raise OripidError(
            "no Hugging Face login: run `hf auth login` (or set HF_TOKEN) with a token that can write, then rerun"
        )
    api = HfApi(endpoint=endpoint, token=token)
    try:
        who = api.whoami()
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise OripidError(
            f"the Hub at {api.endpoint} rejected the login (HTTP {status}): run `hf auth login` again "
            "with a valid token that can write, then rerun"
        ) from None  # the chained error carries request details; keep the message short and token-free
    names = {who.get("name")} | {org.get("name") for org in who.get("orgs") or []}
    return api, who.get("name"), names


def _remote_files(api: HfApi, repo_id: str) -> dict[str, object] | None:
    """Remote files by path, or None when the repository does not exist (or is not visible to us)."""
    try:
        entries = api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)
        return {e.path: e for e in entries if hasattr(e, "size")}
    except RepositoryNotFoundError:
        return None


def push_dataset(
    *,
    workdir: Path,
    repo_id: str,
    dry_run: bool = False,
    public: bool = False,
    endpoint: str | None = None,
    include_features: bool = False,
) -> PushResult:
    """Upload the validated release of `workdir` to the dataset repository `repo_id`, then verify it.

    Refuses a workspace without a current, passing validation report. Creates the repository
    (private unless `public`), renders the card with the repository id, uploads with
    `HfApi.upload_folder` (rerunning after an interruption continues: committed and already
    uploaded files are skipped), then lists the remote files and compares sizes and hashes.
    `dry_run` only reports what would be uploaded and contacts nobody.
    """
    # 1. Check inputs and the validation gate; refuse unfinished shards.
    workdir = Path(workdir)
    check_repo_id(repo_id)
    if not workdir.is_dir():
        raise OripidError(f"workspace {workdir} does not exist: pass the --workdir that `oripid build` wrote")
    report = check_validation(workdir)
    scan_shards(workdir)

    # 2. Dry run: the files as they stand (the card is rendered at push time).
    if dry_run:
        files = release_files(workdir, include_features=include_features)
        result = PushResult(repo_id=repo_id, files=files, dry_run=True)
        if not (workdir / layout.CARD).exists():
            result.notes.append(f"{layout.CARD} does not exist yet: the push renders it before uploading")
        return result

    # 3. Log in, and check the repository: ours to write, and empty or holding an oripid release.
    api, user, namespaces = _client(endpoint)
    namespace = repo_id.split("/", 1)[0]
    if namespace not in namespaces:
        raise OripidError(
            f"you are logged in as {user!r}, who cannot create repositories under {namespace!r}: "
            f"use --repo {user}/{repo_id.split('/', 1)[1]} or an organisation you belong to"
        )
    release = {f.path for f in release_files(workdir, include_features=include_features)} | {layout.CARD}
    remote = _remote_files(api, repo_id)
    result = PushResult(repo_id=repo_id, files=[], dry_run=False, public=public)
    if remote is not None:
        foreign = sorted(set(remote) - release - HUB_MANAGED)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OripidError(
                f"the dataset repository {repo_id} already exists with other content ({len(foreign)} file(s) that "
                f"are not in this release: {shown}): choose a new --repo, or delete those files on the Hub and rerun"
            )
        result.notes.append(
            f"{repo_id} exists with {len(remote)} file(s) of this release: continuing the upload "
            "(its visibility is left as it is)"
        )
    else:
        url = api.create_repo(repo_id, repo_type="dataset", private=not public, exist_ok=True)
        result.created = True
        logger.info("created %s dataset repository %s", "public" if public else "private", url)

    # 4. Render the card for this repository, then upload. upload_folder skips what the Hub
    #    already holds, so a rerun resumes.
    render_card(workdir=workdir, repo_id=repo_id)
    files = result.files = release_files(workdir, include_features=include_features)
    total = sum(f.size for f in files)
    logger.info("uploading %d files (%.1f MB) to %s", len(files), total / 1e6, repo_id)
    try:
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=workdir,
            allow_patterns=RELEASE_PATTERNS + (FEATURES_PATTERNS if include_features else []),
            ignore_patterns=list(IGNORE_PATTERNS),
            commit_message=f"oripid release (shard digest {report['digest'][:12]})",
        )
    except Exception as exc:
        # The client wraps transfer errors (RuntimeError "Error while uploading ..."); an HTTP or
        # network failure anywhere in the chain is an interruption the user can resume from.
        cause = _transfer_failure(exc)
        if cause is None:
            raise
        raise OripidError(
            f"the upload to {repo_id} was interrupted ({cause} from {api.endpoint}): rerun the same "
            "`oripid push` to continue where it stopped"
        ) from None
    result.commit = getattr(info, "oid", None)
    result.url = f"{api.endpoint}/datasets/{repo_id}"

    # 5. Verify: every local file is on the Hub with the same size and hash.
    result.verification = _verify(api, repo_id, files)
    if not result.verification.ok:
        raise OripidError(
            f"verification of {repo_id} failed: {result.verification.summary()}: rerun `oripid push` to upload "
            "the missing or different files again"
        )
    logger.info("verified %d files on %s", len(files), repo_id)
    return result


def _transfer_failure(exc: BaseException) -> str | None:
    """'HTTP 507' or the network error's type when `exc` or its causes is one; None otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, HfHubHTTPError):
            response = seen.response
            return f"HTTP {response.status_code}" if response is not None else type(seen).__name__
        if isinstance(seen, (httpx2.TransportError, OSError)):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def _verify(api: HfApi, repo_id: str, files: list[LocalFile]) -> VerifyReport:
    hash_files(files)
    remote = _remote_files(api, repo_id)
    if remote is None:
        raise OripidError(f"the dataset repository {repo_id} is not visible with this login: check --repo")
    return verify_remote(files, remote, ignore=HUB_MANAGED)


def verify_dataset(
    *, workdir: Path, repo_id: str, endpoint: str | None = None, include_features: bool = False
) -> VerifyReport:
    """Compare the release of `workdir` with what `repo_id` holds now (read-only; push calls the same)."""
    check_repo_id(repo_id)
    api, _, _ = _client(endpoint)
    return _verify(api, repo_id, release_files(Path(workdir), include_features=include_features))


def describe(result: PushResult) -> str:
    """Human-readable lines for the CLI (no token, no secrets: only paths, sizes, ids)."""
    lines = []
    if result.dry_run:
        lines.append(
            f"dry run: would upload {len(result.files)} files ({result.total_bytes:,} bytes) to {result.repo_id}"
        )
        lines += [f"  {f.size:>14,}  {f.path}" for f in result.files]
    else:
        if result.created:
            lines.append(
                f"created the {'public' if result.public else 'private'} dataset repository {result.repo_id}"
            )
        lines.append(f"pushed {len(result.files)} files ({result.total_bytes:,} bytes) to {result.url}")
        if result.verification is not None:
            lines.append(f"verified: {result.verification.summary()}")
    lines += [f"note: {n}" for n in result.notes]
    return os.linesep.join(lines)
