"""Write into a stage folder beside the destination, then move the results in on success.

export, quantize and build-engine all use `staged`: a step that fails half-way leaves the
deployment folder as it was (the stage, a hidden `.<step>-*` folder, is removed either way).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Stage:
    """A stage folder (`path`) and what to do to `dest` when the step succeeds."""

    def __init__(self, path: Path, dest: Path) -> None:
        self.path = path
        self.dest = dest
        self._moves: list[tuple[str, str]] = []  # (staged name, sub-folder of dest)
        self._removals: list[Path] = []

    def keep(self, name: str, into: str = "") -> Path:
        """Marks `path/name` to be moved to `dest/into/name` on success; returns the staged path."""
        self._moves.append((name, into))
        return self.path / name

    def remove(self, path: Path) -> None:
        """Deletes `path` (file or folder) on success, before the kept files move in."""
        self._removals.append(Path(path))

    def commit(self) -> None:
        for path in self._removals:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for name, into in self._moves:
            folder = self.dest / into
            folder.mkdir(parents=True, exist_ok=True)
            (self.path / name).replace(folder / name)  # a rename: atomic on one filesystem


@contextmanager
def staged(dest: Path, step: str) -> Iterator[Stage]:
    """Yields a Stage in `dest` (created); commits it when the block ends without an error.

    Files are moved in the order they were kept, so keep manifest.json last.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    stage = Stage(Path(tempfile.mkdtemp(prefix=f".{step}-", dir=dest)), dest)
    try:
        yield stage
        stage.commit()
    finally:
        shutil.rmtree(stage.path, ignore_errors=True)
