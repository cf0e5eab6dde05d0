"""Keys, signatures and hashing, behind a suite interface.

A *suite* bundles a signature scheme and a hash function. Callers never name
an algorithm: they hold a :class:`PrivateKey` or :class:`PublicKey`, which
carry their suite, and call :meth:`PrivateKey.sign` / :meth:`PublicKey.verify`.
A network picks its suite at genesis (DESIGN §9); adding the national-standard
suite (SM2 signatures, SM3 hashes) means registering one more
:class:`SignatureSuite` in :data:`SUITES` — no caller changes.

The default suite is ``ed25519``: Ed25519 signatures (RFC 8032) with SHA-256.
Signing and verification use libsodium (PyNaCl), about twice as fast as
OpenSSL for verification; key files use pyca/cryptography's PKCS#8 PEM,
optionally encrypted with a passphrase (scrypt + AES-256-CBC as chosen by
``BestAvailableEncryption``).

Pure: no I/O, no clock, no randomness. Generating a key (the operating
system's CSPRNG) and reading and writing key files (mode 0600) is
:mod:`belep.keys`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from belep.errors import InvalidSignature, KeyFileError, ValidationError


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """SHA-256 of ``data`` (used for CIDs and block hashes in every suite)."""
    return hashlib.sha256(data).digest()


class SignatureSuite(Protocol):
    """What a cryptographic suite provides. Implementations are stateless."""

    name: str
    public_key_size: int
    signature_size: int

    seed_size: int

    def public_from_secret(self, secret: bytes) -> bytes:
        """Raw public key for raw secret key material."""

    def sign(self, secret: bytes, message: bytes) -> bytes:
        """Signature of ``message``."""

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` is valid for ``message`` under ``public``."""

    def hash(self, data: bytes) -> bytes:
        """The suite's hash function (SHA-256 or SM3)."""

    def secret_to_pem(self, secret: bytes, passphrase: bytes | None) -> bytes:
        """PKCS#8 PEM of the secret, encrypted if a passphrase is given."""

    def secret_from_pem(self, pem: bytes, passphrase: bytes | None) -> bytes:
        """Raw secret from PKCS#8 PEM; raises :class:`KeyFileError`."""


class Ed25519Suite:
    """Ed25519 (RFC 8032) with SHA-256."""

    name = "ed25519"
    public_key_size = 32
    signature_size = 64

    seed_size = 32

    def public_from_secret(self, secret: bytes) -> bytes:
        return bytes(nacl.signing.SigningKey(secret).verify_key)

    def sign(self, secret: bytes, message: bytes) -> bytes:
        return nacl.signing.SigningKey(secret).sign(message).signature

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        if len(public) != 32 or len(signature) != 64:
            return False
        try:
            nacl.signing.VerifyKey(public).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True

    def hash(self, data: bytes) -> bytes:
        return sha256(data)

    def secret_to_pem(self, secret: bytes, passphrase: bytes | None) -> bytes:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(secret)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def secret_from_pem(self, pem: bytes, passphrase: bytes | None) -> bytes:
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase or None)
        except TypeError as exc:
            # cryptography raises TypeError for "password given but not encrypted" and
            # "encrypted but no password given".
            raise KeyFileError("passphrase does not match the key file", found=str(exc)) from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFileError("cannot read private key (wrong passphrase or not a key)") from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyFileError(
                "wrong key type", expected="Ed25519 private key", found=type(key).__name__
            )
        return key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )


#: Registered suites by name. A network's genesis names one.
SUITES: dict[str, SignatureSuite] = {"ed25519": Ed25519Suite()}
DEFAULT_SUITE = "ed25519"


def get_suite(name: str) -> SignatureSuite:
    """Return the suite called ``name`` or raise :class:`ValidationError`."""
    try:
        return SUITES[name]
    except KeyError:
        raise ValidationError(
            "unknown cryptographic suite", expected=sorted(SUITES), found=name
        ) from None


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key of some suite. Value-comparable and hashable."""

    suite: str
    raw: bytes

    def __post_init__(self) -> None:
        impl = get_suite(self.suite)
        if len(self.raw) != impl.public_key_size:
            raise ValidationError(
                "public key has the wrong length",
                expected=impl.public_key_size,
                found=len(self.raw),
            )

    def is_valid_signature(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` over ``message`` verifies under this key."""
        return get_suite(self.suite).verify(self.raw, message, signature)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` verifies."""
        if not self.is_valid_signature(message, signature):
            raise InvalidSignature("signature does not verify", where=f"key {self.fingerprint()}")

    def fingerprint(self) -> str:
        """Short, stable identifier: ``<suite>:<first 16 bytes of SHA-256(raw) in hex>``."""
        return f"{self.suite}:{sha256(self.raw)[:16].hex()}"

    def to_text(self) -> str:
        """``<suite>:<hex of the raw key>``, the form used in configs and genesis files."""
        return f"{self.suite}:{self.raw.hex()}"

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Parse :meth:`to_text` output; raises :class:`ValidationError`."""
        suite, sep, hex_key = text.partition(":")
        if not sep:
            raise ValidationError(
                "public key text has no suite prefix", expected="<suite>:<hex>", found=text
            )
        try:
            raw = bytes.fromhex(hex_key)
        except ValueError:
            raise ValidationError("public key is not hex", found=hex_key) from None
        return cls(suite, raw)


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A private key. ``repr`` never shows the secret."""

    suite: str
    secret: bytes = field(repr=False)
    public_key: PublicKey = field(init=False, compare=False)

    def __post_init__(self) -> None:
        impl = get_suite(self.suite)
        object.__setattr__(
            self, "public_key", PublicKey(self.suite, impl.public_from_secret(self.secret))
        )

    @classmethod
    def from_seed(cls, seed: bytes, suite: str = DEFAULT_SUITE) -> PrivateKey:
        """The key of 32 seed bytes (fresh ones: :func:`belep.keys.generate_private_key`;
        fixed ones only in tests and simulations)."""
        if len(seed) != 32:
            raise ValidationError("seed has the wrong length", expected=32, found=len(seed))
        return cls(suite, seed)

    def sign(self, message: bytes) -> bytes:
        """Signature of ``message``."""
        return get_suite(self.suite).sign(self.secret, message)
