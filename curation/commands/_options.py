"""Shared helpers for subcommands: pydantic validation with errors that name field and value."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def parse_int_list(text: str) -> list[int]:
    """'1000,200,50' -> [1000, 200, 50]; left to pydantic to reject non-integers by name."""
    return [part.strip() for part in str(text).split(",") if part.strip()]  # type: ignore[misc]


def validate(model: type[Model], /, **values) -> Model:
    """Build the options model or raise ValueError listing each bad option and its value."""
    try:
        return model(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"] or ("options",)  # a model-level validator names no field
            name = "--" + str(loc[0]).replace("_", "-")
            where = "".join(f"[{p}]" for p in loc[1:])
            problems.append(f"{name}{where}={err.get('input')!r}: {err['msg']}")
        raise ValueError("invalid options: " + "; ".join(problems)) from None
