"""Kubo's deterministic test data, as a stream.

Owns: the byte stream Kubo's test suite calls "random deterministic" data
(``test/cli/testutils/random_deterministic.go``): the ChaCha20 keystream
with key ``SHA-256(seed)`` (the seed string's UTF-8 bytes), an all-zero
96-bit nonce and block counter 0. The published Kubo CIDs of such files
(``chunk-v0-seed``, ``v0-seed`` …) are the content store's test vectors, and
the benchmark files are made the same way.

Invariant: ``DeterministicStream(seed, n)`` yields exactly ``n`` bytes, and
the first ``k`` bytes do not depend on ``n``.

No I/O: it generates bytes in memory, one buffer at a time.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_ZEROS = memoryview(bytes(1 << 20))


class DeterministicStream:
    """A readable (``readinto``/``read``) of ``size`` keystream bytes."""

    def __init__(self, seed: str, size: int) -> None:
        if size < 0:
            raise ValueError("size must be non-negative")
        key = hashlib.sha256(seed.encode("utf-8")).digest()
        # pyca's ChaCha20 takes a 16-byte nonce: 4-byte little-endian block
        # counter followed by the 12-byte nonce; both are zero here.
        self._encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        self._remaining = size

    @property
    def remaining(self) -> int:
        """Bytes not yet read."""
        return self._remaining

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        """Fill ``buffer`` with the next keystream bytes; 0 at the end."""
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._remaining)
        done = 0
        while done < count:
            step = min(count - done, len(_ZEROS))
            self._encryptor.update_into(_ZEROS[:step], view[done : done + step])
            done += step
        self._remaining -= count
        return count

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all remaining bytes when ``size < 0``)."""
        count = self._remaining if size < 0 else min(size, self._remaining)
        out = bytearray(count)
        self.readinto(out)
        return bytes(out)


def deterministic_bytes(seed: str, size: int) -> bytes:
    """The first ``size`` bytes of the stream for ``seed`` (for small sizes)."""
    return DeterministicStream(seed, size).read()
