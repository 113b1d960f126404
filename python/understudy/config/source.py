"""TOML text to plain data, with the line of every key kept for error messages.

`tomllib` parses but forgets positions; operators need "file:line: key: what is
wrong". `locate()` re-reads the text line by line and records where each table
header and each `key =` sits, by dotted path (array-of-tables entries get their
index). It understands what configs use -- headers, `[[arrays]]`, dotted and
quoted keys, multi-line strings and arrays -- and falls back to the nearest
enclosing table's line for anything it cannot place (an inline table's keys).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Located", "Path_", "load", "loads", "locate"]

#: A key path: table names and keys, with list indexes for arrays of tables.
Path_ = tuple[str | int, ...]


class ConfigError(ValueError):
    """A config that cannot run, pointing at the file, line and key."""

    def __init__(self, message: str, *, file: str = "<config>", line: int | None = None, key: str = "") -> None:
        self.message, self.file, self.line, self.key = message, file, line, key
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Located:
    """Parsed data plus where each key was written."""

    data: dict[str, Any]
    lines: dict[Path_, int]
    file: str

    def line(self, path: Path_) -> int | None:
        """The line of `path`, or of its nearest written ancestor."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: Path_, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.line(path), key=dotted(path))


def dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_BARE = r"[A-Za-z0-9_-]+"
_KEY = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY)


def _parts(dotted_key: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted_key))


def locate(text: str) -> dict[Path_, int]:
    """Key path -> 1-based line, for headers and assignments in `text`."""
    lines: dict[Path_, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: Path_ = ()
    open_quote: str | None = None
    depth = 0  # open brackets of a multi-line array or inline table
    for number, line in enumerate(text.splitlines(), 1):
        if open_quote is not None:
            if open_quote in line:
                open_quote = None
            continue
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        header = _HEADER.match(line)
        if header:
            names = _parts(header.group(2))
            if header.group(1) == "[[":
                index = counts.get(names, 0)
                counts[names] = index + 1
                table = (*_resolve(names, counts), index)
            else:
                table = _resolve(names, counts)
            lines.setdefault(table, number)
            continue
        assign = _ASSIGN.match(line)
        if not assign:
            continue
        lines.setdefault((*table, *_parts(assign.group(1))), number)
        rest = line[assign.end():]
        for quote in ('"""', "'''"):
            if rest.count(quote) == 1:
                open_quote = quote
        if open_quote is None:
            depth = max(0, _bracket_balance(rest))
    return lines


def _resolve(names: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> Path_:
    """A header's path, with the current index of each enclosing array of tables."""
    out: list[str | int] = []
    for i in range(len(names)):
        out.append(names[i])
        prefix = names[: i + 1]
        if prefix in counts and i + 1 < len(names):
            out.append(counts[prefix] - 1)
    return tuple(out)


def _bracket_balance(text: str) -> int:
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", text.split("#", 1)[0] if '"' not in text else text)
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def loads(text: str, file: str = "<config>") -> Located:
    """Parse TOML text; a syntax error becomes a ConfigError with its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        match = re.search(r"\(at line (\d+), column \d+\)", str(e))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise ConfigError(f"TOML syntax: {message}", file=file, line=int(match.group(1)) if match else None) from None
    return Located(data, locate(text), file)


def load(path: str | Path) -> Located:
    """Read and parse a config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=str(path)) from None
    return loads(text, str(path))
