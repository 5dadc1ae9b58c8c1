"""Shared helpers for subcommands: flags generated from the core's pydantic models, and one
validation of the model with errors that name flag and value.

Every option is declared once, as a field of a pydantic model (description, default,
constraints); `add_model_arguments` turns the fields into argparse flags and `from_args`
builds the model from the parsed flags. argparse only collects strings: the model does all
checking, so one run reports every bad option at once, each under its flag name.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

Model = TypeVar("Model", bound=BaseModel)


def flag(name: str) -> str:
    """Field name -> its command-line flag: n_clusters -> --n-clusters."""
    return "--" + name.replace("_", "-")


def parse_list(text: str) -> list[str]:
    """'1000,200,50' -> ['1000', '200', '50']; the model converts the items, so a bad one is
    rejected by name and position (--n-clusters[1]='x')."""
    return [part.strip() for part in str(text).split(",") if part.strip()]


def _unwrap(annotation):
    """The annotation without `| None` (Optional)."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _show(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def add_model_arguments(
    parser: argparse.ArgumentParser, model: type[BaseModel], exclude: tuple[str, ...] = ()
) -> None:
    """One flag per field of `model`: --kebab-case name, help from the field's description,
    its Literal choices and its default. Lists and tuples are given comma-separated ("1,2,3").
    A bool field defaulting to True becomes --no-<name> (False: --<name>). Flags left out
    are not set on the namespace, so the model's own default applies (declared once).
    Fields declared by `model` itself come before the ones it inherits."""
    inherited = set().union(*(getattr(b, "model_fields", {}) for b in model.__bases__))
    names = sorted(model.model_fields, key=lambda n: n in inherited)  # stable sort
    for name in names:
        if name in exclude:
            continue
        field = model.model_fields[name]
        annotation = _unwrap(field.annotation)
        default = field.get_default(call_default_factory=True)
        required = field.is_required()
        parts = [field.description] if field.description else []
        if annotation is bool:
            on = bool(default)
            parser.add_argument(
                flag(("no_" if on else "") + name),
                dest=name,
                action="store_false" if on else "store_true",
                default=argparse.SUPPRESS,
                help=("do not " if on else "") + (field.description or name.replace("_", " ")),
            )
            continue
        if get_origin(annotation) is Literal:
            parts.append(" | ".join(str(a) for a in get_args(annotation)))
        is_list = get_origin(annotation) in (list, tuple)
        if is_list:
            parts.append("comma-separated")
        if not required and default not in (None, PydanticUndefined, [], ()):
            parts.append(f"default: {_show(default)}")
        parser.add_argument(
            flag(name),
            dest=name,
            required=required,
            default=argparse.SUPPRESS,
            type=parse_list if is_list else None,
            help="; ".join(parts) or None,
        )


def from_args(model: type[Model], args: argparse.Namespace, /, **values) -> Model:
    """Build `model` from the flags `add_model_arguments` added (and `values`), validated once."""
    given = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    return validate(model, **{**given, **values})


def validate(model: type[Model], /, **values) -> Model:
    """Build the options model or raise ValueError listing each bad option and its value."""
    try:
        return model(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"] or ("options",)  # a model-level validator names no field
            name = flag(str(loc[0]))
            where = "".join(f"[{p}]" for p in loc[1:])
            problems.append(f"{name}{where}={err.get('input')!r}: {err['msg']}")
        raise ValueError("invalid options: " + "; ".join(problems)) from None
