"""Where a policy comes from: a file (YAML, TOML or JSON) and ``BUDGETWARDEN_*`` variables.

Both are read strictly, because a setting that is silently dropped is a budget that is not
kept: a key given twice in a file, or a variable that names no field, is an error that says
where it is and what was meant.
"""

from __future__ import annotations

import collections.abc
import json
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails

if TYPE_CHECKING:
    import yaml

__all__ = ["ENV_PREFIX", "OTHER_VARIABLES", "PolicyError", "apply_env_overrides", "read_file"]

ENV_PREFIX = "BUDGETWARDEN_"
#: ``BUDGETWARDEN_*`` variables that are no policy fields (after the prefix): the policy file
#: (``Policy.from_env``), the command line's options (``--events``, ``--ledger``,
#: ``--namespace``) and the test suite's switch (``BUDGETWARDEN_REQUIRE_SERVICES``).
OTHER_VARIABLES = frozenset({"POLICY", "EVENTS", "LEDGER", "NAMESPACE", "REQUIRE_SERVICES"})


class PolicyError(ValueError):
    """A policy file or value that cannot be used; the message says which field and why."""


# ----------------------------------------------------------------------------- files


def read_file(path: Path) -> dict[str, Any]:
    """The mapping a policy file holds; ``PolicyError`` naming the file if it cannot be read
    as its suffix says, holds a key twice, or holds no mapping."""
    reader = _READERS.get(path.suffix)
    if reader is None:
        raise PolicyError(f"{path}: unknown policy format; use .yaml, .yml, .toml or .json")
    try:
        data = reader(path.read_text(encoding="utf-8"), str(path))
    except ValueError as exc:  # UnicodeDecodeError too
        raise PolicyError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy file must hold a mapping at its top level")
    return data


def _read_yaml(text: str, name: str) -> Any:
    import yaml

    loader = _unique_key_loader()(text)
    loader.name = name  # where its errors say they are, instead of "<unicode string>"
    try:
        return loader.get_single_data() or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


def _read_toml(text: str, name: str) -> Any:
    try:
        return tomllib.loads(text)  # refuses a key given twice itself
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"invalid TOML: {exc}") from exc


def _read_json(text: str, name: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_json_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc


#: Readers by suffix: the file's text and name -> what it holds.
_READERS: dict[str, Callable[[str, str], Any]] = {
    ".yaml": _read_yaml,
    ".yml": _read_yaml,
    ".toml": _read_toml,
    ".json": _read_json,
}


def _twice(key: Any) -> str:
    return (
        f"key {key!r} is given twice in one mapping, and the second would silently replace "
        "the first: keep one"
    )


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"invalid JSON: {_twice(key)}")
        data[key] = value
    return data


@cache
def _unique_key_loader() -> type[yaml.SafeLoader]:
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(
            self, node: yaml.MappingNode, deep: bool = False
        ) -> dict[typing.Hashable, Any]:
            _refuse_repeated_keys(self, node)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _refuse_repeated_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    """Raise at a key the mapping ``node`` already holds (merge keys, ``<<``, may repeat a
    merged key: that is how YAML overrides one)."""
    import yaml

    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, typing.Hashable):
            continue  # construct_mapping says why
        line = key_node.start_mark.line + 1
        if key in lines:
            where = f"lines {lines[key]} and {line}" if lines[key] != line else f"line {line}"
            raise yaml.constructor.ConstructorError(
                None, None, f"{_twice(key)} ({where})", key_node.start_mark
            )
        lines[key] = line


def name_the_source(error: ValidationError, source: str) -> ValidationError:
    """``error`` with its title saying where the values came from (the fields, their paths
    and messages unchanged): ``1 validation error for Policy from policy.yaml``."""
    details = [_init_details(detail) for detail in error.errors()]
    try:
        return ValidationError.from_exception_data(f"{error.title} from {source}", details)
    except (KeyError, TypeError, ValueError):  # an error type pydantic cannot rebuild
        error.add_note(f"(from {source})")
        return error


def _init_details(detail: ErrorDetails) -> InitErrorDetails:
    """What ``ValidationError.from_exception_data`` needs to rebuild one error."""
    init: InitErrorDetails = {
        "type": detail["type"],
        "loc": detail["loc"],
        "input": detail["input"],
    }
    if "ctx" in detail:
        init["ctx"] = detail["ctx"]
    return init


# ----------------------------------------------------------------------------- variables


def apply_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str], model: type[BaseModel]
) -> list[str]:
    """Apply every ``BUDGETWARDEN_A__B=value`` as ``data["a"]["b"] = value``, and return the
    names of the variables applied.

    A value is JSON-decoded (numbers, lists, objects) unless its field is a string, which
    takes it as written (``BUDGETWARDEN_FALLBACK_MODEL=1234``). A variable that names no
    field of ``model`` raises ``PolicyError`` with the nearest valid name, except the few
    that budgetwarden reads for other purposes (``OTHER_VARIABLES``).
    """
    applied = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name[len(ENV_PREFIX) :] in OTHER_VARIABLES:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        kind = _field_type(model, path)
        if kind is _NO_FIELD:
            raise PolicyError(_unknown_variable(name, model))
        _put(data, path, raw if _is_text(kind) else _decoded(raw))
        applied.append(name)
    return applied


#: What ``_field_type`` returns for a path that leads to no field.
_NO_FIELD: Any = object()
_UNIONS = (typing.Union, types.UnionType)


def _field_type(model: type[BaseModel], path: list[str]) -> Any:
    """The type of the field at ``path`` (field names, or keys inside a dict field), or
    ``_NO_FIELD``."""
    kind: Any = model
    for part in path:
        kind = _container_in(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = kind.model_fields.get(part)
            if field is None:
                return _NO_FIELD
            kind = field.annotation
        elif _is_mapping(kind) and part:
            kind = typing.get_args(kind)[1]
        else:
            return _NO_FIELD
    return kind


def _container_in(kind: Any) -> Any:
    """The model or dict type a field holds (``Routing | None`` -> ``Routing``), else
    ``kind`` itself."""
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if typing.get_origin(kind) in _UNIONS:
        return next(
            (
                member
                for member in typing.get_args(kind)
                if _is_mapping(member)
                or (isinstance(member, type) and issubclass(member, BaseModel))
            ),
            kind,
        )
    return kind


def _is_mapping(kind: Any) -> bool:
    return typing.get_origin(kind) in (dict, collections.abc.Mapping)


def _is_text(kind: Any) -> bool:
    """True for a string field (``str``, ``str | None``): it takes a variable as written."""
    members = typing.get_args(kind) if typing.get_origin(kind) in _UNIONS else (kind,)
    return str in members and all(m in (str, type(None)) for m in members)


def _decoded(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _put(data: dict[str, Any], path: list[str], value: Any) -> None:
    target = data
    for part in path[:-1]:
        child = target.get(part)
        child = dict(child) if isinstance(child, Mapping) else {}
        target[part] = child
        target = child
    target[path[-1]] = value


def _unknown_variable(name: str, model: type[BaseModel]) -> str:
    import difflib  # only for this error (it adds a millisecond to every import)

    close = difflib.get_close_matches(name, _variable_names(model), n=1, cutoff=0.6)
    hint = (
        f"did you mean {close[0]}?"
        if close
        else f"use {ENV_PREFIX}<FIELD>__<SUBFIELD>, e.g. {ENV_PREFIX}LIMITS__MAX_COST_USD"
    )
    return (
        f"environment variable {name} names no policy field: {hint} (nested fields are "
        "joined by two underscores; unset the variable if it is not meant for budgetwarden)"
    )


@cache
def _variable_names(model: type[BaseModel]) -> list[str]:
    """Every variable that names a field of ``model`` or of the models in it, and the
    variables budgetwarden reads for other purposes."""
    names = [ENV_PREFIX + other for other in sorted(OTHER_VARIABLES)]

    def walk(kind: type[BaseModel], prefix: str) -> None:
        for field_name, field in kind.model_fields.items():
            name = prefix + field_name.upper()
            names.append(name)
            inner = _container_in(field.annotation)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                walk(inner, name + "__")

    walk(model, ENV_PREFIX)
    return names
