"""The simulator's signature suite: real Ed25519, with verification results memoised.

In a simulated committee every replica verifies the same signatures (each
vote, each certificate) — ``n`` times the work of one node, all in one
process. :class:`MemoEd25519Suite` is the ``ed25519`` suite (same keys, same
deterministic RFC 8032 signatures, same libsodium verification) plus a cache
of ``(public key, message, signature) -> valid?`` answers, so each distinct
triple is verified once per process. Caching a pure function changes no
answer: a forged or corrupted signature is a different triple and is
verified (and rejected) for real. Signing reuses the expanded key per secret.

It is registered in :data:`belep.crypto.SUITES` under :data:`SIM_SUITE` when
this module is imported; only simulated keys (:func:`belep.sim.engine.sim_key`)
use it. Production nodes never do.

No I/O. The cache is bounded (cleared when it reaches ``_MAX_ENTRIES``).
"""

from __future__ import annotations

import nacl.signing

from belep.crypto import SUITES, Ed25519Suite

__all__ = ["SIM_SUITE", "MemoEd25519Suite"]

SIM_SUITE = "ed25519-sim"
_MAX_ENTRIES = 400_000


class MemoEd25519Suite(Ed25519Suite):
    """Ed25519 with memoised verification (for the simulator)."""

    name = SIM_SUITE

    def __init__(self) -> None:
        self._verified: dict[tuple[bytes, bytes, bytes], bool] = {}
        self._signers: dict[bytes, nacl.signing.SigningKey] = {}
        self.hits = 0
        self.misses = 0

    def sign(self, secret: bytes, message: bytes) -> bytes:
        signer = self._signers.get(secret)
        if signer is None:
            signer = nacl.signing.SigningKey(secret)
            self._signers[secret] = signer
        return signer.sign(message).signature

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        key = (public, message, signature)
        known = self._verified.get(key)
        if known is not None:
            self.hits += 1
            return known
        self.misses += 1
        valid = super().verify(public, message, signature)
        if len(self._verified) >= _MAX_ENTRIES:
            self._verified.clear()
        self._verified[key] = valid
        return valid


if SIM_SUITE not in SUITES:
    SUITES[SIM_SUITE] = MemoEd25519Suite()
