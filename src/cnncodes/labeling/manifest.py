"""The collection's labels.csv as the labelling tool keeps it: one row per image (path relative to the folder, label,
any other columns kept), rewritten whole and atomically after every answer, and never over a change made by another
program meanwhile."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..data.datasets import manifest_id
from ..errors import CnnCodesError
from ..files import atomic_write

NAME = "labels.csv"
MAX_CLASS_NAME = 100


class ChangedOutside(CnnCodesError):
    """The manifest changed on disk since this process last read or wrote it."""


def check_class_name(name: str) -> str:
    """A class name as given, stripped; a clear error for one that a manifest or a folder could not hold."""
    name = (name or "").strip()
    if not name:
        raise CnnCodesError("a class name cannot be empty")
    if len(name) > MAX_CLASS_NAME:
        raise CnnCodesError(f"a class name has at most {MAX_CLASS_NAME} characters (got {len(name)})")
    if any(ord(c) < 32 for c in name):
        raise CnnCodesError("a class name cannot hold control characters (line breaks, tabs)")
    return name


class Manifest:
    """labels.csv of a folder: {path: label} in the file's order, with the columns it had."""

    def __init__(self, folder: Path, image_paths: list[str]):
        """Read folder/labels.csv (or start one) and add a row without a label for each image it does not list."""
        self.path = Path(folder) / NAME
        self.columns, self.rows, self.images = ["path", "label"], {}, list(image_paths)
        self.header = list(self.columns)  # as the file spells them (Path, Label...): rewritten the same way
        if self.path.exists():
            self._read()
        self._list_images()
        self.stamp = None
        self.save()

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8-sig")
            reader = csv.DictReader(io.StringIO(text))
            rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CnnCodesError(f"cannot read {self.path}: {exc}") from None
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if not {"path", "label"} <= set(columns):
            raise CnnCodesError(f"{self.path} exists but is not a manifest (a CSV with the columns path,label): "
                                "move it away or fix its header")
        self.columns, self.header = columns, [c.strip() for c in reader.fieldnames]
        self.rows = {}
        for row in rows:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if row.get("path"):  # each image by its id, as a run reads the file (an absolute path made relative)
                image = manifest_id(self.path, row["path"])
                self.rows[image] = row | {"path": image}
        self._list_images()

    def _list_images(self) -> None:
        for p in self.images:  # the folder's images the file does not list: still there to be labelled
            self.rows.setdefault(p, {"path": p, "label": ""})

    def _stat(self):
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size, st.st_ino

    def label(self, path: str) -> str:
        return self.rows[path]["label"]

    def labels(self) -> dict[str, str]:
        return {p: r["label"] for p, r in self.rows.items()}

    def set(self, changes: dict[str, str]) -> None:
        """Write these labels ("" removes one); refused (ChangedOutside) when the file changed since we last saw it."""
        if self.stamp is not None and (not self.path.exists() or self._stat() != self.stamp):
            self._read()
            self.stamp = self._stat() if self.path.exists() else None
            raise ChangedOutside(f"{self.path} was changed by another program while the labelling tool was running; "
                                 "its new contents are loaded now (your earlier answers are in the file): reload the "
                                 "page and answer again")
        for path, label in changes.items():
            self.rows[path]["label"] = label
        self.save()

    def save(self) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerow(self.header)
        writer = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writerows({c: r.get(c, "") for c in self.columns} for r in self.rows.values())
        atomic_write(self.path, text.getvalue().encode("utf-8"))
        self.stamp = self._stat()
