"""Vectorised 128-bit hashes of Arrow strings, and a lookup table from them to row numbers.

Joining 50,000,000 event rows to 1,000,000 leads by their string ``lead_id`` and dropping
duplicate ``event_id`` s are the costly steps of the feature builder. Arrow's ``index_in``
and ``unique`` hash strings one at a time (about 200 ns a row against a million keys); here
the bytes are hashed eight at a time straight from the Arrow buffers, and lookups go through
an open-addressing table of (hash, hash, row) records, one cache line per probe.

Two independent 64-bit hashes make a 128-bit key: the chance that two of 10^8 distinct ids
share it is about 10^-23, so equal keys are treated as equal strings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xFF51AFD7ED558CCD)
_M4 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S29 = np.uint64(29)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_NULL1 = np.uint64(0x6A09E667F3BCC908)  # the hash pair of a null string
_NULL2 = np.uint64(0xBB67AE8584CAA73B)


def _mix(h: np.ndarray, mult: np.uint64) -> np.ndarray:
    h *= mult
    h ^= h >> _S33
    return h


def _offsets(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, length, bytes) of a string array; the bytes are padded so that an 8-byte read
    past any string's end stays inside the buffer."""
    n = len(array)
    _, offsets_buf, data_buf = array.buffers()[:3]
    width = 8 if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type) else 4
    offsets = np.frombuffer(
        offsets_buf, dtype=np.int64 if width == 8 else np.int32, count=n + 1, offset=array.offset * width
    ).astype(np.int64)
    base, end = int(offsets[0]), int(offsets[-1])
    length = np.diff(offsets)
    longest = int(length.max(initial=0))
    padded = np.zeros(end - base + longest + 16, dtype=np.uint8)
    if data_buf is not None and end > base:
        padded[: end - base] = np.frombuffer(data_buf, dtype=np.uint8, count=end - base, offset=base)
    return offsets[:-1] - base, length, padded


def _hash_plain(array: pa.Array, seed: np.uint64) -> np.ndarray:
    """Mix each string's 8-byte words: the words at offsets 0, 8, ... before the last one,
    then the final 8 bytes (overlapping the previous word; masked only for strings shorter
    than 8). Every read is a full unaligned 8-byte load, so no masking in the common case."""
    n = len(array)
    if n == 0:
        return np.zeros(0, np.uint64)
    start, length, padded = _offsets(array)
    words = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))  # unaligned view
    h = length.astype(np.uint64) * _M1 + seed
    inner = np.maximum(length - 1, 0) // 8  # full words before the final one
    for j in range(int(inner.max(initial=0))):
        word = words[start + 8 * j]
        mixed = _mix(h ^ word, _M3)
        h = mixed if inner.min() > j else np.where(inner > j, mixed, h)
    final = words[start + np.maximum(length - 8, 0)]
    short = length < 8
    if short.any():
        shift = (length[short] * 8).astype(np.uint64)
        final[short] &= (np.uint64(1) << shift) - np.uint64(1)
    h = _mix(h ^ final, _M3)
    h = _mix(h ^ (h >> _S29), _M4)
    h = _mix(h, _M2)
    if array.null_count:
        h[np.asarray(array.is_null())] = _NULL1 ^ seed
    return h


_SEED1 = np.uint64(0x243F6A8885A308D3)
_SEED2 = np.uint64(0x13198A2E03707344)


def hash64(values: pa.Array | pa.ChunkedArray, seed: np.uint64 = _SEED1) -> np.ndarray:
    """A uint64 hash of each string (a dictionary array hashes its dictionary); nulls hash alike."""
    if isinstance(values, pa.ChunkedArray):
        parts = [hash64(chunk, seed) for chunk in values.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    if pa.types.is_dictionary(values.type):
        d = np.append(_hash_plain(values.dictionary, seed), _NULL1 ^ seed)
        idx = values.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return d[idx]
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    return _hash_plain(values, seed)


def hash_strings(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent uint64 hashes of each string: a 128-bit key."""
    return hash64(values, _SEED1), hash64(values, _SEED2)


_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


class HashIndex:
    """Row number of each distinct key, looked up by its hash pair (open addressing).

    A slot is one uint64: the row number + 1 in the high half (0 = empty) and the high half
    of the first hash as a fingerprint in the low half, so a probe costs one random read; a
    fingerprint hit is confirmed against the key's second hash.
    """

    def __init__(self, h1: np.ndarray, h2: np.ndarray) -> None:
        n = len(h1)
        size = 1 << max(4, (2 * n - 1).bit_length())  # load factor <= 0.5
        self._mask = size - 1
        self._h1 = h1
        self._h2 = h2
        table = np.zeros(size, dtype=np.uint64)
        finger = h1 >> _S32
        pending = np.arange(n, dtype=np.int64)
        slot = (h1 & np.uint64(self._mask)).astype(np.int64)
        dup: list[np.ndarray] = []
        while pending.size:
            s = slot[pending]
            held = table[s]
            occupied = held != 0
            held_row = (held >> _S32).astype(np.int64) - 1
            same = occupied & ((held & _LOW32) == finger[pending])
            if same.any():
                idx = np.flatnonzero(same)
                really = (h1[held_row[idx]] == h1[pending[idx]]) & (h2[held_row[idx]] == h2[pending[idx]])
                same[idx[~really]] = False
            if same.any():
                dup.append(pending[same])
                keep = ~same
                pending, s, occupied = pending[keep], s[keep], occupied[keep]
            free = ~occupied
            cand, cslots = pending[free], s[free]
            uniq, first = np.unique(cslots, return_index=True)
            winners = cand[first]
            table[uniq] = ((winners + 1).astype(np.uint64) << _S32) | finger[winners]
            placed = np.zeros(n, dtype=bool)
            placed[winners] = True
            retry_same = free & ~placed[pending]  # lost the slot to an equal or a different key
            slot[pending[occupied]] = (s[occupied] + 1) & self._mask
            pending = np.concatenate([pending[retry_same], pending[occupied]])
        self.duplicates = np.sort(np.concatenate(dup)) if dup else np.zeros(0, dtype=np.int64)
        self._table = table

    def lookup(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Row number of each hash pair, -1 when absent."""
        out = np.full(len(h1), -1, dtype=np.int64)
        pending = np.arange(len(h1), dtype=np.int64)
        slot = (h1 & np.uint64(self._mask)).astype(np.int64)
        finger = h1 >> _S32
        first = True
        while pending.size:
            held = self._table[slot] if first else self._table[slot[pending]]
            f = finger if first else finger[pending]
            occupied = held != 0
            hit = occupied & ((held & _LOW32) == f)
            hit_idx = np.flatnonzero(hit)
            rows = (held[hit_idx] >> _S32).astype(np.int64) - 1
            at = hit_idx if first else pending[hit_idx]
            confirmed = (self._h2[rows] == h2[at]) & (self._h1[rows] == h1[at])
            out[pending[hit_idx[confirmed]]] = rows[confirmed]
            hit[hit_idx[~confirmed]] = False
            pending = pending[occupied & ~hit]
            slot[pending] = (slot[pending] + 1) & self._mask
            first = False
        return out


def duplicate_rows(
    h: np.ndarray, order_key: np.ndarray, exact: Callable[[np.ndarray], pa.Array]
) -> np.ndarray:
    """Rows to drop so that each key is kept once: the row with the smallest ``order_key``
    (then the first). ``h`` is a hash of the key; rows sharing a hash are compared exactly on
    the keys ``exact(rows)`` returns, so a hash collision never drops an event."""
    n = len(h)
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    s = np.sort(h)
    repeated = s[1:][s[1:] == s[:-1]]
    del s
    if repeated.size == 0:
        return np.zeros(0, dtype=np.int64)
    repeated = np.unique(repeated)
    bits = max(16, min(28, int(repeated.size).bit_length() + 6))
    bitmap = np.zeros(1 << bits, dtype=bool)
    low = np.uint64((1 << bits) - 1)
    bitmap[(repeated & low).astype(np.int64)] = True
    cand = np.flatnonzero(bitmap[(h & low).astype(np.int64)])
    pos = np.minimum(np.searchsorted(repeated, h[cand]), repeated.size - 1)
    cand = cand[repeated[pos] == h[cand]]
    keys = pc.dictionary_encode(exact(cand)).indices.fill_null(-1).to_numpy(zero_copy_only=False)
    real = keys >= 0  # null keys are never duplicates of each other
    cand, keys = cand[real], keys[real]
    order = np.lexsort((cand, order_key[cand], keys))
    c, k = cand[order], keys[order]
    return np.sort(c[1:][k[1:] == k[:-1]])
