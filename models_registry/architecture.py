"""Instantiate a model's full-size components with random weights, on the meta device or a GPU.

Compute does not depend on weight values, so this is what cost estimates (FLOPs on the meta
device) and throughput benchmarks run on, without downloading a checkpoint.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import torch

from oripid.errors import OripidError
from oripid.models_registry.schema import Component, ModelEntry


def component_class(component: Component):
    try:
        return getattr(importlib.import_module(component.library), component.class_name)
    except (ImportError, AttributeError):
        raise OripidError(
            f"architecture: {component.library} has no {component.class_name!r}; fix 'library' or 'class_name'"
        ) from None


def build_component(
    component: Component, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32
):
    """One component with random weights; on "meta" no memory is allocated."""
    cls = component_class(component)
    try:
        model = _instantiate(cls, component, device)
    except (TypeError, ValueError, KeyError) as exc:
        raise OripidError(
            f"architecture: cannot build {component.class_name} from its config ({type(exc).__name__}: {exc}); "
            "check the component's 'config' against the class's arguments"
        ) from None
    if dtype != torch.float32:  # components are built in float32
        model = model.to(dtype=dtype)
    return model.eval()


def _instantiate(cls, component: Component, device):
    with torch.device(device):
        if component.library.startswith("transformers"):
            config_class = cls.config_class
            model = cls(config_class(**component.config))
        elif cls.__name__ == "ChatGLMModel":  # transformers-style model living inside diffusers
            from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

            model = cls(ChatGLMConfig(**component.config), empty_init=False)
        else:
            model = cls.from_config(component.config)
    return model


def build_architecture(
    entry: ModelEntry,
    names: Iterable[str] | None = None,
    device: str | torch.device = "meta",
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.nn.Module]:
    """The named full-size components (all by default) of a registry entry."""
    names = list(names) if names is not None else list(entry.architecture)
    unknown = [name for name in names if name not in entry.architecture]
    if unknown:
        raise OripidError(
            f"model {entry.key!r} has no component {unknown}; it has {', '.join(entry.architecture)}"
        )
    return {name: build_component(entry.architecture[name], device, dtype) for name in names}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
