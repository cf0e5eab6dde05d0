"""The one exception tree of BELEP.

Two branches, named after whose fault it was:

* :class:`ValidationError` — the *input* is bad: a malformed encoding, a wrong
  signature, a proof that does not match, a block that does not extend the
  chain. Retrying the same input will fail the same way. Subclasses carry what
  was expected and what was found, so a message can say both.
* :class:`EnvironmentFault` — the *environment* failed: storage, network,
  a peer that went away. The input may be fine; retrying may help.

Foreign exceptions (``sqlite3.Error``, ``OSError``, ``httpx`` errors …) are
wrapped at the module boundary that meets them, with the original kept as
``__cause__``. Validation never uses ``assert`` (``python -O`` strips it).
"""

from __future__ import annotations

from typing import Any


class BelepError(Exception):
    """Base of every error BELEP raises on purpose."""


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


class ValidationError(BelepError):
    """Input that is not acceptable.

    ``expected`` and ``found`` are optional, human-readable descriptions (or
    values) of what the check wanted and what it got; ``where`` names the
    location (a field, a height, a byte offset, a CID).
    """

    def __init__(
        self,
        message: str,
        *,
        expected: Any = None,
        found: Any = None,
        where: str | None = None,
    ) -> None:
        self.message = message
        self.expected = expected
        self.found = found
        self.where = where
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        if self.where is not None:
            parts.append(f"at {self.where}")
        if self.expected is not None or self.found is not None:
            parts.append(f"(expected {_show(self.expected)}, found {_show(self.found)})")
        return " ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        text = raw.hex()
        return text if len(text) <= 80 else f"{text[:76]}… ({len(raw)} bytes)"
    return repr(value)


class EncodingError(ValidationError):
    """Bytes that are not the canonical encoding of a supported value."""


class SchemaError(ValidationError):
    """A well-formed value whose shape or field types are wrong for its record."""


class InvalidSignature(ValidationError):
    """A signature that does not verify under the claimed key."""


class UnknownSigner(ValidationError):
    """A signature by a key (or node id) that is not in the trusted set."""


class QuorumNotMet(ValidationError):
    """A certificate with fewer distinct valid signers than the quorum."""


class HashMismatch(ValidationError):
    """Content whose hash is not the hash it claims."""


class ProofMismatch(ValidationError):
    """A Merkle proof whose recomputed root differs from the expected root."""


class MalformedProof(ValidationError):
    """A Merkle proof with the wrong shape (length, indices) for its tree sizes."""


class ChainError(ValidationError):
    """A block that does not extend the chain (height, previous hash, root, QC)."""


class CidError(ValidationError):
    """A string or byte sequence that is not a supported CID."""


class KeyFileError(ValidationError):
    """A key file that cannot be read: wrong format, wrong passphrase, unsafe permissions."""


class ProtocolViolation(ValidationError):
    """A consensus or transport message that breaks the protocol's rules."""


class PeerRejected(ProtocolViolation):
    """A transport peer broke the framing, handshake or session rules.

    ``reason`` is a short stable code (``"oversized_frame"``, ``"bad_signature"``,
    ``"replayed_frame"`` …) used as a log field and a metrics label.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        expected: Any = None,
        found: Any = None,
        where: str | None = None,
    ) -> None:
        self.reason = reason
        super().__init__(message, expected=expected, found=found, where=where)


class ConfigError(ValidationError):
    """A configuration, topology or genesis file that is invalid."""


# --------------------------------------------------------------------------
# The environment failed
# --------------------------------------------------------------------------


class EnvironmentFault(BelepError):
    """Something outside the input failed: disk, network, a peer."""


class StorageError(EnvironmentFault):
    """A store could not read or write (I/O error, locked database, full disk)."""


class NotFound(StorageError):
    """The requested item is not in the store."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"not found: {what}")


class CorruptStore(StorageError):
    """Stored bytes no longer match what was written (detected on read)."""


class NetworkError(EnvironmentFault):
    """A connection failed, timed out or was closed by the peer."""


class PeerUnavailable(NetworkError):
    """No peer could serve the request."""


# --------------------------------------------------------------------------
# Requests a running node refuses (raised by its service, ``belep.node.service``;
# the HTTP layer answers each with its own status)
# --------------------------------------------------------------------------


class DomainNotHeld(ValidationError):
    """A request names a domain this node does not hold."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        super().__init__("this node does not hold the domain", found=domain)


class NotAVoter(ValidationError):
    """A submission to a node that only observes the domain; ``voters`` are the URLs of
    the nodes that accept it."""

    def __init__(self, domain: str, voters: tuple[str, ...]) -> None:
        self.domain = domain
        self.voters = voters
        super().__init__("this node only observes the domain; submit to a voter", found=domain)


class TooManyAtOnce(ValidationError):
    """One request carries more transactions than the node ever admits at once."""

    def __init__(self, limit: int, found: int) -> None:
        self.limit = limit
        super().__init__(
            "more transactions than this node admits at once", expected=f"<= {limit}", found=found
        )


class Unauthenticated(ValidationError):
    """A request without the credential its endpoint needs (``needed``: what would do;
    ``realm``: the protection space it belongs to)."""

    def __init__(self, needed: str, realm: str) -> None:
        self.needed = needed
        self.realm = realm
        super().__init__(f"{needed} required")


class Overloaded(EnvironmentFault):
    """Admission control refuses a submission for now (``reason``: ``delay``, ``rate`` or
    ``outstanding``); retrying after ``retry_after_ms`` may succeed."""

    def __init__(self, reason: str, message: str, retry_after_ms: int) -> None:
        self.reason = reason
        self.message = message
        self.retry_after_ms = retry_after_ms
        super().__init__(message)
