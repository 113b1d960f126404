"""The director's config: TOML parsed into a typed model kept apart from runtime
state; every error names the file, line and key."""

from __future__ import annotations

from pathlib import Path

from understudy.config.cluster import ClusterConfig, read_cluster
from understudy.config.director import DirectorConfig, read_director
from understudy.config.reader import Table
from understudy.config.source import ConfigError, load

__all__ = ["ClusterConfig", "ConfigError", "DirectorConfig", "load_cluster", "load_config"]


def load_config(path: str | Path, node: int | None = None) -> DirectorConfig:
    """A whole director config file (`understudy run`, `check-config`)."""
    return read_director(Table(load(path)), node, Path(path).resolve().parent)


def load_cluster(path: str | Path, node: int | None = None) -> ClusterConfig:
    """The failover part of a config file, for `node` (default: the file's `node = N`)."""
    src = load(path)
    root = Table(src)
    cluster = read_cluster(root, node, Path(path).resolve().parent)
    for key in ("services", "sync", "metrics", "admin", "health"):
        root.raw(key)  # the daemon's sections, read by their own modules
    root.done()
    return cluster
