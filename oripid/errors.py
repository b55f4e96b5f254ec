"""The one exception type that means "the user can fix this": the CLI prints it without a traceback,
and the one way a pydantic validation error becomes such a message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

Model = TypeVar("Model")


class OripidError(Exception):
    """A user-facing error: the message names the file or field and says what to do."""


def describe_validation_error(
    exc: Any, source: str, missing_hint: str = "add it", unknown_hint: str = "remove it or check its spelling"
) -> str:
    """`<source>: invalid` and one line per problem, each naming the field and the fix."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = f"missing: {missing_hint}"
        elif error["type"] == "extra_forbidden":
            message = f"unknown field: {unknown_hint}"
        lines.append(f"field '{where}': {message}")
    return f"{source}: invalid\n  " + "\n  ".join(lines)


def validated(model: type[Model], data: Mapping[str, Any] | None, source: str, **hints: str) -> Model:
    """`model.model_validate(data)`, raising an OripidError that names `source` and each field."""
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise OripidError(describe_validation_error(exc, source, **hints)) from None
