"""The base of every model a person writes in YAML: unknown keys are errors, values are immutable, and numbers are
numbers.

Pydantic's lax mode reads `port: true` as port 1 and `days: "30"` as 30. A setting that needs a number takes an
integer (or, where a fraction makes sense, an integer or a decimal) and nothing else: true/false and quoted text are
refused with the field's file:line, like any other mistake.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator

_NUMBERS = (int, float)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return tuple(_unwrap(a) for a in get_args(tp))
    return None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def number_problem(tp: Any, value: Any) -> str | None:
    """Why `value` may not stand where a model declares type `tp`, if a number is wanted and it is not one.

    Only number types are judged here; everything else is left to pydantic. Containers are walked (list[int],
    dict[str, float], int | None ...); nested models judge their own fields."""
    tp = _unwrap(tp)
    members = _union_args(tp)
    if members is None:
        members = (tp,)
    members = tuple(m for m in members if m is not type(None))
    numbers = [m for m in members if m in _NUMBERS]
    if isinstance(value, bool):
        if not numbers or any(m is bool or m is Any for m in members):
            return None
        return _scalar_problem(float if float in numbers else int, value)
    if isinstance(value, str | float):
        # Text, or a fraction where only whole numbers are wanted, is refused only when nothing but a number may
        # stand here (a member such as a path or a name may take text).
        if not numbers or len(numbers) < len(members) or (isinstance(value, float) and float in numbers):
            return None
        return _scalar_problem(float if float in numbers else int, value)
    if isinstance(value, int):
        return None
    problems = [p for m in members if (p := _container_problem(m, value)) is not None]
    candidates = [m for m in members if _fits_container(m, value)]
    return problems[0] if candidates and len(problems) == len(candidates) else None


def _fits_container(tp: Any, value: Any) -> bool:
    origin = get_origin(tp)
    if origin in (list, tuple, set, frozenset):
        return isinstance(value, list | tuple)
    return origin is dict and isinstance(value, dict)


def _container_problem(tp: Any, value: Any) -> str | None:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (list, tuple, set, frozenset) and isinstance(value, list | tuple):
        item_args = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(item_args) > 1:
            pairs = list(zip(item_args, value, strict=False))
        else:
            pairs = [(item_args[0] if item_args else Any, v) for v in value]
        for i, (item_tp, item) in enumerate(pairs):
            problem = number_problem(item_tp, item)
            if problem is not None:
                return f"in item {i + 1}: {problem}"
    elif origin is dict and isinstance(value, dict):
        value_tp = args[1] if len(args) == 2 else Any
        for key, item in value.items():
            problem = number_problem(value_tp, item)
            if problem is not None:
                return f"in '{key}': {problem}"
    return None


def _scalar_problem(tp: type, value: Any) -> str | None:
    want = "a whole number" if tp is int else "a number"
    if isinstance(value, bool):
        return f"{str(value).lower()} is not a number; write {want}"
    if isinstance(value, str):
        return f"'{value[:40]}' is text; write {want} without quotes"
    if tp is int and isinstance(value, float):
        return f"{value} has a fraction or decimal point; write {want}"
    return None


class NotANumber:
    """Stands in for a value a number field refused, so pydantic reports it at the field's own location; the
    loader's error translation shows `problem` instead of pydantic's generic message."""

    __slots__ = ("problem", "value")

    def __init__(self, problem: str, value: Any) -> None:
        self.problem = problem
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


class StrictModel(BaseModel):
    """Unknown keys are errors, values are immutable, and a number field takes only a number (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        marked: dict[str, Any] | None = None
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None:
                continue
            problem = number_problem(field.annotation, value)
            if problem is not None:
                marked = dict(data) if marked is None else marked
                marked[name] = NotANumber(problem, value)
        return data if marked is None else marked
