"""A run's frozen audience, its contact ids in frozen order, wherever they are kept.

A run's batches are positions in this list (``actors/segment.py``). In memory it is the
array the freeze made; once written to the run's folder it is read back a row group at a
time (at most ``ROW_GROUP`` ids, 8 MB), so a run of 10M contacts does not keep 80 MB of ids
for its whole length: the stream reads them in order, as it renders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 1 << 20  # ids per row group of a frozen audience file


class FrozenIds:
    """The ids, in memory or in a parquet file with an ``id`` column."""

    def __init__(self, ids: pa.Array | None = None, path: Path | None = None) -> None:
        if (ids is None) == (path is None):
            raise ValueError("give the ids or the file that holds them")
        self._ids = None if ids is None else ids.to_numpy(zero_copy_only=False)
        self._file = None if path is None else pq.ParquetFile(path)
        self._path = path
        self._ascending: bool | None = None
        if self._file is not None:
            groups = [self._file.metadata.row_group(i).num_rows for i in range(self._groups)]
            self._starts = np.cumsum([0, *groups])
        self._cached: tuple[int, np.ndarray] | None = None  # (row group, its ids)

    @classmethod
    def in_memory(cls, ids: pa.Array) -> FrozenIds:
        return cls(ids=ids)

    @classmethod
    def in_file(cls, path: Path) -> FrozenIds:
        return cls(path=path)

    @property
    def _groups(self) -> int:
        return self._file.metadata.num_row_groups

    def __len__(self) -> int:
        if self._ids is not None:
            return len(self._ids)
        return int(self._starts[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """The ids at positions ``start`` to ``stop - 1`` (fewer past the end)."""
        if self._ids is not None:
            return self._ids[start:stop]
        stop = min(stop, len(self))
        if start >= stop:
            return np.empty(0, np.int64)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        last = int(np.searchsorted(self._starts, stop - 1, side="right")) - 1
        parts = []
        for group in range(first, last + 1):
            ids = self._group(group)
            offset = int(self._starts[group])
            parts.append(ids[max(start - offset, 0) : stop - offset])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _group(self, group: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != group:
            table = self._file.read_row_group(group, columns=["id"])
            ids = table.column("id").combine_chunks().to_numpy(zero_copy_only=False)
            self._cached = (group, ids)
        return self._cached[1]

    def at(self, position: int) -> int:
        return int(self.read(position, position + 1)[0])

    def ascending(self) -> bool:
        """Whether every id is larger than the one before (a source sorted by id)."""
        if self._ascending is None:
            if self._ids is not None:
                ids = self._ids
                self._ascending = len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1]))
            else:
                self._ascending = self._file_ascends()
        return self._ascending

    def _file_ascends(self) -> bool:
        previous = None
        for group in range(self._groups):
            ids = self._group(group)
            if len(ids) == 0:
                continue
            if previous is not None and ids[0] <= previous:
                return False
            if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
                return False
            previous = ids[-1]
        return True

    def to_array(self) -> pa.Array:
        """Every id, in memory (a cluster's segment actor is handed them whole)."""
        if self._ids is not None:
            return pa.array(self._ids, pa.int64())
        return pq.read_table(self._path, columns=["id"]).column("id").combine_chunks()
