"""How extraction runs. An engine computes the missing shards of a codes store and commits each one:

    compute_shards(dataset, store, shards, spec, settings, bar)

`local` (this process's threads) and `ray` (Ray Data actors, one machine or a cluster) are peers; both call the
one decode -> skip -> batch -> forward path in cnncodes.inference."""
from __future__ import annotations

from importlib import import_module

from ..errors import CnnCodesError

ENGINES = ("local", "ray")


def get_engine(name: str):
    """The compute_shards function of an engine (imported on demand: Ray is an optional dependency)."""
    if name not in ENGINES:
        raise CnnCodesError(f"unknown engine {name!r}; use {' or '.join(ENGINES)}")
    return import_module(f".{name}", __name__).compute_shards
