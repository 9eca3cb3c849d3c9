"""Tools some tests need on the machine (redis-server, Chromium, valgrind).

Without one, its tests skip with a message saying how to install it; under
``BUDGETWARDEN_REQUIRE_SERVICES=1`` (CI, whose ``.ci/run`` installs them all) they fail instead.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def binary_or_skip(*names: str, install: str) -> str:
    """The path of the first of ``names`` on PATH; else skip (fail under CI) with ``install``,
    the package that provides it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    missing(f"{names[0]} is not installed (apt-get install {install})")


def missing(why: str) -> NoReturn:
    """Skip the running test because of ``why``, or fail it when CI requires every tool."""
    if os.environ.get("BUDGETWARDEN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{why}, and BUDGETWARDEN_REQUIRE_SERVICES=1 says it must run")
    pytest.skip(f"{why}; set BUDGETWARDEN_REQUIRE_SERVICES=1 to make this a failure")
