"""The Parquet lake: partitioned by zone, table, source and run date, written atomically.

Layout::

    <root>/<zone>/<table>/source=<source>/run_date=<YYYY-MM-DD>/part-00000.parquet
                                                               /_manifest.json

A partition is written into a hidden temporary directory beside its final place and then
renamed into place, so a reader never sees half a partition: it either finds the complete
previous version, nothing, or the complete new one. ``_manifest.json`` records the rows,
the contract table and a content digest, which later parts use for lineage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import conform, schema_for

ZONES = ("raw", "clean", "quarantine", "features", "scores", "reports", "forecasts", "state")
MANIFEST = "_manifest.json"


class LakeError(RuntimeError):
    """A lake operation failed; the message names the partition."""


@dataclass(frozen=True)
class Partition:
    """The address of one partition in the lake."""

    zone: str
    table: str
    source: str
    run_date: dt.date

    def relpath(self) -> Path:
        return Path(self.zone, self.table, f"source={self.source}", f"run_date={self.run_date.isoformat()}")


class Lake:
    """Read and write canonical tables under one root directory (local path)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # ---- paths ------------------------------------------------------------------------
    def path(self, part: Partition) -> Path:
        if part.zone not in ZONES:
            raise LakeError(f"unknown zone {part.zone!r}; known: {', '.join(ZONES)}")
        return self.root / part.relpath()

    def exists(self, part: Partition) -> bool:
        return (self.path(part) / MANIFEST).is_file()

    def report_dir(self, job: str, *, run_date: dt.date | None = None, run_id: str | None = None) -> Path:
        """The one place report paths are made: ``<root>/reports/<job>/run_date=<d>`` or
        ``.../run_id=<id>``, the id made safe for a file name (whoever writes or prints it)."""
        if (run_date is None) == (run_id is None):
            raise LakeError("report_dir: give exactly one of run_date and run_id")
        key = f"run_date={run_date.isoformat()}" if run_date is not None else f"run_id={safe_name(run_id)}"
        return self.root / "reports" / job / key

    # ---- writing ----------------------------------------------------------------------
    def write(
        self,
        data: pa.Table | object,
        part: Partition,
        *,
        table_name: str | None = None,
        max_rows_per_file: int = 2_000_000,
    ) -> Path:
        """Conform ``data`` to its contract and replace the partition atomically.

        ``table_name`` picks the contract when it differs from ``part.table``; pass
        ``table_name=""`` for tables outside the contract (features, reports).
        """
        name = part.table if table_name is None else table_name
        table = conform(data, schema_for(name)) if name else _as_table(data)
        final = self.path(part)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            digest = hashlib.sha256()
            files = []
            batches = range(0, max(table.num_rows, 1), max_rows_per_file)
            for i, start in enumerate(batches):
                chunk = table.slice(start, max_rows_per_file)
                file = staging / f"part-{i:05d}.parquet"
                pq.write_table(chunk, file, compression="zstd")
                _fsync(file)
                digest.update(file.read_bytes())
                files.append(file.name)
            manifest = {
                "table": name or part.table,
                "zone": part.zone,
                "source": part.source,
                "run_date": part.run_date.isoformat(),
                "rows": table.num_rows,
                "files": files,
                "sha256": digest.hexdigest(),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            _fsync(staging / MANIFEST)
            _swap_into_place(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    # ---- reading ----------------------------------------------------------------------
    def manifest(self, part: Partition) -> dict:
        path = self.path(part) / MANIFEST
        if not path.is_file():
            raise LakeError(f"no complete partition at {self.path(part)}")
        return json.loads(path.read_text())

    def read(self, part: Partition, *, columns: Sequence[str] | None = None) -> pa.Table:
        """Read one complete partition."""
        manifest = self.manifest(part)
        paths = [self.path(part) / f for f in manifest["files"]]
        return pa.concat_tables(pq.read_table(p, columns=columns) for p in paths)

    def partitions(
        self,
        zone: str,
        table: str,
        *,
        sources: Iterable[str] | None = None,
        run_dates: Iterable[dt.date] | None = None,
    ) -> list[Partition]:
        """List complete partitions of a table, sorted by source and run date."""
        base = self.root / zone / table
        wanted_sources = set(sources) if sources is not None else None
        wanted_dates = set(run_dates) if run_dates is not None else None
        found = []
        for manifest in sorted(base.glob(f"source=*/run_date=*/{MANIFEST}")):
            source = manifest.parent.parent.name.removeprefix("source=")
            run_date = dt.date.fromisoformat(manifest.parent.name.removeprefix("run_date="))
            if (wanted_sources is None or source in wanted_sources) and (
                wanted_dates is None or run_date in wanted_dates
            ):
                found.append(Partition(zone, table, source, run_date))
        return found

    def read_all(self, zone: str, table: str, **filters: object) -> pa.Table | None:
        """Concatenate every complete partition of a table (None if there is none)."""
        parts = self.partitions(zone, table, **filters)  # type: ignore[arg-type]
        if not parts:
            return None
        return pa.concat_tables(self.read(p) for p in parts)


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._=-]`` replaced by ``_`` (file names)."""
    return re.sub(r"[^A-Za-z0-9._=-]", "_", text)


def latest_per_key(table: pa.Table, key: str, by: str) -> pa.Table:
    """One row per ``key``: the one with the greatest ``by``; among equals the later row wins.

    How accumulated extracts compact to current state (e.g. a lead's latest CRM row)."""
    if table.num_rows == 0:
        return table
    order = pa.array(np.arange(table.num_rows))
    ranked = table.append_column("__row", order)
    ranked = ranked.take(
        pc.sort_indices(ranked, sort_keys=[(key, "ascending"), (by, "descending"), ("__row", "descending")])
    )
    keys = ranked.column(key).combine_chunks()
    first = np.ones(len(keys), dtype=bool)
    first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).to_numpy(zero_copy_only=False)
    return ranked.filter(pa.array(first)).drop_columns(["__row"])


def _as_table(data: pa.Table | object) -> pa.Table:
    return data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_into_place(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``; an existing ``final`` is moved aside first.

    Between the two renames the partition is absent, never partial.
    """
    if final.exists():
        trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex}"
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
