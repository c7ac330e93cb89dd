"""Read a pickle that may hold plain data only: dicts, lists, tuples, strings, numbers, None, booleans.

``pickle.load`` calls whatever the file names: a caption file whose ``__reduce__`` returns
``(os.system, ("...",))`` runs that command the moment it is loaded. Plain data needs no
such call (every type above has its own opcode), so this reader refuses every global the
file asks for (classes, functions: ``find_class`` never resolves anything) and then checks
that the result holds only the types above (a protocol-4 set or bytes needs no global but is
not caption data either).
"""

from __future__ import annotations

import pickle
from typing import Any, BinaryIO

PLAIN_TYPES = (dict, list, tuple, str, int, float, bool, type(None))


class RefusedPickleError(pickle.UnpicklingError):
    """The pickle names a Python global, or holds something other than plain data."""


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise RefusedPickleError(
            f"refused to unpickle: the file asks for the Python global {module}.{name} "
            "(only dicts, lists, tuples, strings and numbers are read; unpickling other objects can run code)"
        )


def check_plain(obj: Any) -> None:
    """Raise :class:`RefusedPickleError` unless ``obj`` is made of :data:`PLAIN_TYPES` only."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if type(item) not in PLAIN_TYPES:
            raise RefusedPickleError(f"refused: the file holds a {type(item).__name__}, not plain data")
        if isinstance(item, (dict, list, tuple)):
            if id(item) in seen:  # a container pickled as part of itself
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)


def load_plain_pickle(file: BinaryIO) -> Any:
    """Unpickle plain data from ``file``; anything else raises :class:`RefusedPickleError` (nothing runs)."""
    data = _PlainDataUnpickler(file).load()
    check_plain(data)
    return data
