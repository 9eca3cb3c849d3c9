"""What a ``redis://`` ledger URI may say, checked when the ledger is made.

redis-py reads every query option of a URL into keyword arguments of its connections, which
it makes only at the first command: ``?timout=0.5`` was accepted and the first call raised
``TypeError: AbstractConnection.__init__() got an unexpected keyword argument 'timout'``,
and ``redis://host/x`` quietly used database 0. Here an option must be one of ours
(``namespace``, ``timeout``, ``connect_timeout``) or one that redis-py reads from a URL and
the sync and async connections of the URI's scheme both take; the path must be a database
number; our timeouts must be seconds above 0.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Iterable, Mapping

import redis.asyncio.connection as async_connection
import redis.connection as sync_connection

__all__ = ["OURS", "check_db_path", "check_options", "seconds"]

#: Query options the ledger itself reads (and takes out before redis-py sees the URL).
OURS = ("namespace", "timeout", "connect_timeout")

#: Options redis-py passes on from a URL as text (those it converts first are the keys of
#: ``redis.connection.URL_QUERY_ARGUMENT_PARSERS``).
_TEXT_OPTIONS = frozenset(
    {
        "client_name",
        "username",
        "password",
        "encoding",
        "encoding_errors",
        "lib_name",
        "lib_version",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_ciphers",
        "ssl_password",
    }
)
#: redis-py converts ``retry_on_error`` with ``list()``: a list of letters, not of errors.
_NOT_FROM_A_URL = frozenset({"retry_on_error"})
_POOL_OPTIONS = frozenset({"max_connections"})
_CONNECTIONS = {
    "redis": (sync_connection.Connection, async_connection.Connection),
    "rediss": (sync_connection.SSLConnection, async_connection.SSLConnection),
    "unix": (
        sync_connection.UnixDomainSocketConnection,
        async_connection.UnixDomainSocketConnection,
    ),
}
_DB_PATH = re.compile(r"/?(?:[0-9]+/?)?")


def _keywords(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes, through every ``__init__`` of its MRO."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is not None:
            for name, param in inspect.signature(init).parameters.items():
                if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                    names.add(name)
    return names - {"self"}


def _redis_py_options(scheme: str) -> frozenset[str]:
    """The options redis-py reads from a URL that both connections of ``scheme`` take."""
    sync, asynchronous = _CONNECTIONS[scheme]
    taken = (_keywords(sync) & _keywords(asynchronous)) | _POOL_OPTIONS
    readable = set(sync_connection.URL_QUERY_ARGUMENT_PARSERS) | _TEXT_OPTIONS
    return frozenset((readable & taken) - _NOT_FROM_A_URL - set(OURS))


def check_options(names: Iterable[str], scheme: str, display: str) -> None:
    """Raise ``ValueError`` naming the first option no one would take, and the valid ones."""
    valid = _redis_py_options(scheme.lower())
    for name in names:
        if name not in OURS and name not in valid:
            close = difflib.get_close_matches(name, [*OURS, *valid], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown option {name!r} in redis ledger URI {display}{hint}: use "
                f"{', '.join(OURS)}, or one of redis-py's: {', '.join(sorted(valid))}"
            )


def check_db_path(path: str, scheme: str, display: str) -> None:
    """``redis://host:port/<db>``: the path, if any, must be a database number."""
    if scheme.lower() != "unix" and not _DB_PATH.fullmatch(path):
        raise ValueError(
            f"redis ledger URI {display}: {path!r} is not a database number; use "
            "redis://host:port/0 (a whole number, 0 when left out)"
        )


def seconds(options: Mapping[str, str], name: str, default: str, display: str) -> float:
    """Our timeout option ``name`` as seconds above 0 (``default`` when not given)."""
    text = options.get(name, default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"redis ledger option {name}={text!r} in {display} is not a number of seconds "
            f"above 0: use, for example, {name}={default}"
        )
    return value
