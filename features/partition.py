"""Stable partitioning of leads by a hash of lead_id, for fan-out across workers.

The bucket of a lead never depends on the run, the machine or the Python process (no
``hash()``, which is salted per process), so retries and reruns see the same partitions.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def bucket_of(lead_ids: pa.Array | pa.ChunkedArray, n_buckets: int) -> np.ndarray:
    """Bucket in ``[0, n_buckets)`` of each lead id (FNV-1a 64 over its UTF-8 bytes, then fmix64)."""
    if n_buckets <= 0:
        raise ValueError(f"n_buckets must be positive, got {n_buckets}")
    arr = lead_ids.combine_chunks() if isinstance(lead_ids, pa.ChunkedArray) else lead_ids
    arr = arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr
    if arr.null_count:
        raise ValueError(f"{arr.null_count} null lead_id value(s) cannot be partitioned")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        if arr.buffers()[2] is not None
        else np.zeros(0, np.uint8)
    )
    lengths = np.diff(offsets)
    h = np.full(len(arr), np.uint64(0xCBF29CE484222325))
    prime = np.uint64(0x100000001B3)
    max_len = int(lengths.max()) if len(arr) else 0
    with np.errstate(over="ignore"):
        for i in range(max_len):  # one vectorised step per byte position (ids are short)
            live = lengths > i
            byte = data[offsets[:-1][live] + i].astype(np.uint64)
            h[live] = (h[live] ^ byte) * prime
        # murmur3's fmix64: FNV alone leaves the low bits (what a modulo reads) poorly mixed
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return (h % np.uint64(n_buckets)).astype(np.int32)


def split_by_bucket(table: pa.Table, n_buckets: int, bucket: int) -> pa.Table:
    """The rows of ``table`` whose lead_id falls in ``bucket``."""
    if not 0 <= bucket < n_buckets:
        raise ValueError(f"bucket {bucket} outside [0, {n_buckets})")
    return table.filter(pa.array(bucket_of(table.column("lead_id"), n_buckets) == bucket))
