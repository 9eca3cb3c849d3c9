"""The base of every settings model: frozen, no unknown field, and no boolean taken for a
number (pydantic reads ``True`` as 1: ``Limits(max_iterations=True)`` would be a cap of one
call). Policies, prices and alert rules all build on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Strict"]


class Strict(BaseModel):
    """A frozen pydantic model that refuses unknown fields and booleans for numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """Refuse True and False wherever a field is not a boolean: pydantic would take them
        as 1 and 0 (``Limits(max_iterations=True)`` is no cap of one call)."""
        if not isinstance(data, Mapping):
            return data
        for name, value in data.items():
            field = cls.model_fields.get(name)
            where = _where_boolean(field.annotation, value) if field else None
            if where is not None:
                raise ValueError(
                    f"{name}{where} must be a number, not a boolean (True and False are not "
                    "taken as 1 and 0)"
                )
        return data


def _where_boolean(annotation: Any, value: Any) -> str | None:
    """Where ``value``, given for a field of type ``annotation``, holds a boolean in place of
    a number: ``""`` for the value itself, ``"['key']"`` or ``"[index]"`` for an item of a
    dict or list of numbers; None when nowhere. (Nested models check their own fields.)"""
    if isinstance(value, bool):
        return "" if _takes_numbers(annotation) else None
    container = get_origin(annotation)
    if container is dict and isinstance(value, Mapping):
        items: Any = value.items()
        kind = get_args(annotation)[1]
    elif container is list and isinstance(value, list | tuple):
        items = enumerate(value)
        kind = get_args(annotation)[0]
    else:
        return None
    if not _takes_numbers(kind):
        return None
    return next((f"[{key!r}]" for key, item in items if isinstance(item, bool)), None)


def _takes_numbers(annotation: Any) -> bool:
    """True for ``int`` and ``float``, alone or in a union (``int | None``, ``int | str``)."""
    return annotation in (int, float) or any(a in (int, float) for a in get_args(annotation))
