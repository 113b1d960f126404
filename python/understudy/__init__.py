"""Understudy: the high-availability engine for Linux Virtual Server directors."""

from understudy import _core

__version__: str = _core.__version__

__all__ = ["__version__"]
