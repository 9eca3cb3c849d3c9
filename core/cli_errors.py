"""Errors of the ``budgetwarden`` command in the words of its flags.

The library's models name their fields (``system_prompt_tokens``); a person at the command
line typed a flag (``--system-tokens``). ``in_flag_words`` rewrites a pydantic
``ValidationError`` (or a ``ValueError`` that names a field) with a command's flags, on one
line: ``Invalid value for '--system-tokens': Input should be greater than or equal to 0
(got -5)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

__all__ = ["in_flag_words"]

_VALUE_ERROR = "Value error, "  # what pydantic puts before a validator's own message


def in_flag_words(exc: Exception, flags: Mapping[str, str]) -> str:
    """The error on one line, each field of ``flags`` (field -> flag) called by its flag."""
    if isinstance(exc, ValidationError):
        return "; ".join(_one_error(error, flags) for error in exc.errors(include_url=False))
    return _renamed(str(exc), flags)


def _one_error(error: Any, flags: Mapping[str, str]) -> str:
    message = _renamed(str(error["msg"]).removeprefix(_VALUE_ERROR), flags)
    if not error["loc"]:  # a rule across fields: its message names them
        return message
    field = str(error["loc"][0])
    return f"Invalid value for '{flags.get(field, field)}': {message} (got {error['input']!r})"


def _renamed(text: str, flags: Mapping[str, str]) -> str:
    """``text`` with each field name (``snake_case``) replaced by its flag."""
    for field, flag in flags.items():
        if "_" in field:
            text = re.sub(rf"\b{re.escape(field)}\b", flag, text)
    return text
