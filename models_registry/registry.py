"""Load, merge and validate model entries: built-in files, entry points, then the user's workspace.

Later sources win by key, so a workspace file can point `sd2` at another mirror. A file may say
`extends: <key>` to change a few fields of an existing entry and inherit the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from oripid.errors import OripidError, validated
from oripid.models_registry.schema import ModelEntry

BUILTIN_DIR = Path(__file__).parent / "models"
ENTRY_POINT_GROUP = "oripid.models"
WORKSPACE_SUBDIR = "models"  # <workdir>/models/*.yaml
# OriPID's seven models in the paper's order: the seen one (SD2) first.
ORIPID_MODELS = ("sd2", "sdxl", "opendalle", "colorfulxl", "kandinsky3", "sd3", "kolors")


@dataclass
class Registry:
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    # key -> top-level field -> the file (or entry point) that set it
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, key: str) -> ModelEntry:
        if key not in self.entries:
            raise OripidError(f"unknown model key {key!r}; known keys: {', '.join(self.keys())}")
        return self.entries[key]

    def keys(self) -> list[str]:
        return list(self.entries)

    def add(self, raw: Mapping[str, Any], source: str) -> ModelEntry:
        raw = dict(raw)
        field_sources: dict[str, str]
        base_key = raw.pop("extends", None)
        if base_key is not None:
            if base_key not in self.raw:
                raise OripidError(
                    f"{source}: field 'extends': no model {base_key!r} to extend; known keys: {', '.join(self.keys())}"
                )
            merged = _deep_merge(self.raw[base_key], raw)
            merged.setdefault("key", base_key)
            field_sources = dict(self.sources[base_key])
        else:
            merged, field_sources = raw, {}
        field_sources.update({name: source for name in raw})
        entry = _validate(merged, source)
        self.entries[entry.key] = entry
        self.raw[entry.key] = merged
        self.sources[entry.key] = field_sources
        return entry


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = _deep_merge(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def _validate(raw: Mapping[str, Any], source: str) -> ModelEntry:
    return validated(
        ModelEntry,
        raw,
        f"{source}: model entry",
        missing_hint="add it (see models_registry/models/sd2.yaml for a complete entry)",
    )


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise OripidError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    except OSError as exc:
        raise OripidError(f"{path}: cannot read ({exc.strerror})") from None


def _entries_in_file(path: Path) -> list[Mapping[str, Any]]:
    """A file holds one entry (a mapping) or several (a list of mappings)."""
    data = _read_yaml(path)
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, Mapping):
            raise OripidError(
                f"{path}: expected a mapping of entry fields (key, checkpoint, ...), got {type(item).__name__}"
            )
    return items


def _yaml_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def _entry_point_items() -> Iterable[tuple[Mapping[str, Any], str]]:
    """An `oripid.models` entry point names a YAML file or folder, or a callable returning entries."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {point.name} = {point.value}"
        try:
            target = point.load()
        except Exception as exc:  # a broken plugin must say which one
            raise OripidError(f"{source}: cannot load ({exc})") from exc
        if callable(target):
            target = target()
        if isinstance(target, (str, Path)):
            path = Path(target)
            for file in _yaml_files(path) if path.is_dir() else [path]:
                for item in _entries_in_file(file):
                    yield item, str(file)
        elif isinstance(target, Mapping):
            yield target, source
        elif isinstance(target, list):
            for item in target:
                yield item, source
        else:
            raise OripidError(f"{source}: must give a YAML path, a mapping or a list of mappings")


def load_registry(workdir: str | Path | None = None, extra_files: Iterable[str | Path] = ()) -> Registry:
    """All model entries: built-in, then `oripid.models` entry points, then `<workdir>/models/*.yaml`,
    then `extra_files`, each validated with errors that name the file and the field."""
    registry = Registry()
    builtin = _yaml_files(BUILTIN_DIR)
    builtin.sort(key=lambda p: ORIPID_MODELS.index(p.stem) if p.stem in ORIPID_MODELS else len(ORIPID_MODELS))
    for path in builtin:
        for item in _entries_in_file(path):
            registry.add(item, str(path))
    for item, source in _entry_point_items():
        registry.add(item, source)
    files: list[Path] = []
    if workdir is not None and (Path(workdir) / WORKSPACE_SUBDIR).is_dir():
        files += _yaml_files(Path(workdir) / WORKSPACE_SUBDIR)
    files += [Path(f) for f in extra_files]
    for path in files:
        for item in _entries_in_file(path):
            registry.add(item, str(path))
    return registry
