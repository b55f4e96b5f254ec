"""Write shards beside the accelerator: encode, tar, index, stats, in a background thread.

A shard is written as `<stem>.tar.partial`, renamed to `.tar` when complete, then its index
parquet, then its stats json: the stats file is the done marker, so a crash leaves no shard that
looks finished. Every byte is reproducible: fixed tar metadata, samples in plan order.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from oripid.builders import layout

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("origin_id", pa.string()),
        ("prompt_idx", pa.int32()),
        ("seed", pa.int64()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image_ext", pa.string()),
    ]
)
_PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


def encode_image(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt in ("jpg", "webp") else {"optimize": False}
    if fmt == "webp":
        options["method"] = 4
    image.convert("RGB").save(buffer, format=_PIL_FORMAT[fmt], **options)
    return buffer.getvalue()


@dataclass
class Sample:
    key: str
    origin_id: str
    prompt_idx: int
    seed: int
    image: Image.Image | bytes | None  # bytes: already encoded in the shard's format
    meta: dict
    failure: str | None = None


@dataclass
class _OpenShard:
    split: str
    model: str
    index: int
    planned: int
    settings: dict
    paths: dict[str, Path]
    tar: wds.TarWriter
    stream: object
    digest: str = ""
    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)


class BackgroundShardWriter:
    """One thread that turns samples into finished shards while the caller keeps generating.

    Commands run in the order they are sent, so samples land in the tar in plan order.
    """

    def __init__(self, workdir: Path, image_format: str, quality: int, queue_size: int = 64):
        self.workdir = Path(workdir)
        self.image_format = image_format
        self.quality = quality
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._current: _OpenShard | None = None
        self.finished: list[dict] = []
        self._thread = threading.Thread(target=self._run, name="oripid-shard-writer", daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------
    def _send(self, command: tuple) -> None:
        if self._error is not None:
            raise RuntimeError("the shard writer failed") from self._error
        self._queue.put(command)

    def open(
        self, split: str, model: str, index: int, planned: int, settings: dict, digest: str = ""
    ) -> None:
        self._send(("open", split, model, index, planned, settings, digest))

    def write(self, sample: Sample) -> None:
        self._send(("write", sample))

    def finish(self) -> None:
        self._send(("finish",))

    def close(self) -> None:
        """Wait for every queued command; re-raise a writer failure here, in the caller."""
        self._queue.put(("stop",))
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("the shard writer failed") from self._error

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            command = self._queue.get()
            if command[0] == "stop":
                return
            if self._error is not None:
                continue  # drain without working so the caller never blocks on a full queue
            try:
                getattr(self, f"_do_{command[0]}")(*command[1:])
            except BaseException as exc:  # noqa: BLE001  (handed to the caller by close()/_send())
                self._error = exc

    def _do_open(self, split: str, model: str, index: int, planned: int, settings: dict, digest: str) -> None:
        paths = layout.shard_paths(self.workdir, split, model, index)
        paths["tar"].parent.mkdir(parents=True, exist_ok=True)
        stream = open(paths["partial"], "wb")  # noqa: SIM115  (closed in _do_finish)
        tar = wds.TarWriter(stream, user="oripid", group="oripid", mode=0o444, mtime=0.0, encoder=False)
        self._current = _OpenShard(split, model, index, planned, settings, paths, tar, stream, digest=digest)

    def _do_write(self, sample: Sample) -> None:
        shard = self._current
        if sample.failure is not None or sample.image is None:
            shard.failures.append(
                {
                    "key": sample.key,
                    "origin_id": sample.origin_id,
                    "prompt_idx": sample.prompt_idx,
                    "reason": sample.failure or "no_image",
                }
            )
            return
        if isinstance(sample.image, bytes):
            data = sample.image
            width, height = sample.meta["width"], sample.meta["height"]
        else:
            data = encode_image(sample.image, self.image_format, self.quality)
            width, height = sample.image.size
        sha = hashlib.sha256(data).hexdigest()
        meta = {**sample.meta, "sha256": sha, "width": width, "height": height}
        shard.tar.write(
            {
                "__key__": sample.key,
                self.image_format: data,
                "json": json.dumps(meta, sort_keys=True).encode(),
            }
        )
        shard.rows.append(
            {
                "key": sample.key,
                "origin_id": sample.origin_id,
                "prompt_idx": sample.prompt_idx,
                "seed": sample.seed,
                "sha256": sha,
                "bytes": len(data),
                "width": width,
                "height": height,
                "image_ext": self.image_format,
            }
        )

    def _do_finish(self) -> None:
        shard, self._current = self._current, None
        shard.tar.close()
        shard.stream.close()
        os.replace(shard.paths["partial"], shard.paths["tar"])
        pq.write_table(pa.Table.from_pylist(shard.rows, schema=INDEX_SCHEMA), shard.paths["index"])
        stats = {
            "split": shard.split,
            "model": shard.model,
            "shard": shard.index,
            "planned": shard.planned,
            "written": len(shard.rows),
            "failed": len(shard.failures),
            "failures": shard.failures,
            "failure_reasons": dict(sorted(Counter(f["reason"] for f in shard.failures).items())),
            "bytes": sum(row["bytes"] for row in shard.rows),
            "settings": shard.settings,
            "digest": shard.digest,
        }
        tmp = shard.paths["stats"].with_suffix(".json.tmp")
        tmp.write_text(json.dumps(stats, indent=1, sort_keys=True))
        os.replace(tmp, shard.paths["stats"])
        self.finished.append(stats)
