"""Typed reads from a parsed table, every failure naming file, line and key.

A `Table` wraps one TOML table and its path; each read removes the key from a
pending set, so `done()` can reject what nobody read -- a misspelt key is an
error ("did you mean ..."), not a silently ignored setting.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from understudy.config.source import ConfigError, Located, Path_

__all__ = ["Table", "REQUIRED"]

T = TypeVar("T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Table:
    """One table of the config being read."""

    def __init__(self, src: Located, path: Path_ = (), data: dict[str, Any] | None = None) -> None:
        self.src, self.path = src, path
        self.data = src.data if data is None else data
        self._pending = set(self.data)
        self._asked: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        return self.src.error(self.path if key is None else (*self.path, key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def _take(self, key: str, default: Any, expected: str, ok: Callable[[Any], bool]) -> Any:
        self._pending.discard(key)
        self._asked.add(key)
        if key not in self.data:
            if default is REQUIRED:
                raise self.error(None, f"missing required key {key!r}")
            return default
        value = self.data[key]
        if not ok(value):
            raise self.error(key, f"expected {expected}, got {_show(value)}")
        return value

    def string(self, key: str, default: Any = REQUIRED, *, choices: tuple[str, ...] = ()) -> Any:
        value = self._take(key, default, "a string", lambda v: isinstance(v, str))
        if choices and value is not default and value not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}; got {value!r}")
        return value

    def boolean(self, key: str, default: Any = REQUIRED) -> Any:
        return self._take(key, default, "true or false", lambda v: isinstance(v, bool))

    def integer(self, key: str, default: Any = REQUIRED, *, min: int | None = None, max: int | None = None) -> Any:
        value = self._take(key, default, "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
        if value is not default:
            self._range(key, value, min, max)
        return value

    def number(self, key: str, default: Any = REQUIRED, *, min: float | None = None, max: float | None = None) -> Any:
        value = self._take(
            key, default, "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        if value is not default:
            value = float(value)
            self._range(key, value, min, max)
        return value

    def strings(self, key: str, default: Any = REQUIRED) -> Any:
        value = self._take(
            key, default, "a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)
        )
        return value if value is default else tuple(value)

    def command(self, key: str, default: Any = None) -> tuple[str, ...] | None:
        """A command: a list of arguments, or one string split as a shell would."""
        import shlex

        value = self._take(
            key,
            default,
            "a command (string or list of strings)",
            lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
        )
        if value is default or value is None:
            return None
        try:
            argv = tuple(shlex.split(value)) if isinstance(value, str) else tuple(value)
        except ValueError as e:
            raise self.error(key, f"cannot split the command: {e}") from None
        if not argv:
            raise self.error(key, "empty command")
        return argv

    def address(self, key: str, default: Any = REQUIRED) -> Any:
        value = self.string(key, default)
        if value is default or value is None:
            return value
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            raise self.error(key, f"not an IP address: {value!r}") from None

    def interface_address(self, key: str, default: Any = REQUIRED) -> Any:
        value = self.string(key, default)
        if value is default or value is None:
            return value
        try:
            return ipaddress.ip_interface(value)
        except ValueError:
            raise self.error(key, f"not an address with optional /prefix: {value!r}") from None

    def table(self, key: str, *, required: bool = False) -> Table:
        value = self._take(key, REQUIRED if required else {}, "a table", lambda v: isinstance(v, dict))
        return Table(self.src, (*self.path, key), value)

    def tables(self, key: str) -> Iterator[Table]:
        """An array of tables ([[key]] entries)."""
        value = self._take(
            key, [], "an array of tables", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v)
        )
        for i, item in enumerate(value):
            yield Table(self.src, (*self.path, key, i), item)

    def raw(self, key: str, default: Any = None) -> Any:
        self._pending.discard(key)
        self._asked.add(key)
        return self.data.get(key, default)

    def done(self) -> None:
        """Reject keys nobody read (typos), suggesting the closest known key."""
        for key in sorted(self._pending):
            close = difflib.get_close_matches(key, sorted(self._asked), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(key, f"unknown key{hint}")

    def _range(self, key: str, value: float, lo: float | None, hi: float | None) -> None:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"{lo}..{hi}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
            raise self.error(key, f"{value} is out of range ({bounds})")


def _show(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return f"{kind.get(type(value), type(value).__name__)} ({value!r})" if not isinstance(value, dict) else "a table"
