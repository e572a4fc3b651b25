"""How extraction runs. An engine computes the codes of some items of a dataset into a codes store, batch by
batch, and returns the reasons it did not store ({content key: reason}):

    compute_codes(dataset, store, indices, spec, settings: codes.extract.Extraction, bar)

`local` (this process's threads) and `ray` (Ray Data actors, one machine or a cluster) are peers; both call the
one decode -> skip -> batch -> forward path in cnncodes.codes.inference."""
from __future__ import annotations

from importlib import import_module

from ...errors import CnnCodesError

ENGINES = ("local", "ray")


def get_engine(name: str):
    """The compute_codes function of an engine (imported on demand: Ray is an optional dependency)."""
    if name not in ENGINES:
        raise CnnCodesError(f"unknown engine {name!r}; use {' or '.join(ENGINES)}")
    return import_module(f".{name}", __name__).compute_codes


def store_batch(append, keys: list[str], codes, reasons: list) -> dict:
    """Append a batch to the store: codes, and the reasons of unusable images that depend on their content alone.
    A read error ("cannot read: ...", a permission, a vanished file) says nothing about the content: it is returned,
    not stored, so the image is read again next time."""
    kept = {n: why for n, why in enumerate(reasons) if why and not why.startswith("cannot read")}
    unstored = {keys[n]: why for n, why in enumerate(reasons) if why and n not in kept}
    good = [n for n in range(len(keys)) if keys[n] not in unstored]
    if good:
        append([keys[n] for n in good], codes[good], {m: kept[n] for m, n in enumerate(good) if n in kept})
    return unstored
