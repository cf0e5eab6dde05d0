"""Keys and signatures: RFC 8032 vectors, key files (0600, passphrase), fingerprints, suites."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from belep import crypto
from belep.crypto import PrivateKey, PublicKey
from belep.errors import InvalidSignature, KeyFileError, ValidationError
from belep.keys import generate_private_key, read_private_key, write_private_key

# RFC 8032 §7.1, TEST 1 and TEST 2.
RFC8032 = [
    (
        "test1-empty",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "test2-one-byte",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize(
    ("name", "secret", "public", "message", "signature"), RFC8032, ids=[v[0] for v in RFC8032]
)
def test_rfc8032_vectors(name: str, secret: str, public: str, message: str, signature: str) -> None:
    key = PrivateKey.from_seed(bytes.fromhex(secret))
    assert key.public_key.raw.hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    key.public_key.verify(bytes.fromhex(message), bytes.fromhex(signature))


def test_tampered_message_signature_or_key_fails() -> None:
    key = generate_private_key()
    other = generate_private_key()
    signature = key.sign(b"evidence")
    assert key.public_key.is_valid_signature(b"evidence", signature)
    assert not key.public_key.is_valid_signature(b"evidencf", signature)
    assert not other.public_key.is_valid_signature(b"evidence", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not key.public_key.is_valid_signature(b"evidence", flipped)
    assert not key.public_key.is_valid_signature(b"evidence", signature[:-1])
    with pytest.raises(InvalidSignature):
        key.public_key.verify(b"evidencf", signature)


def test_public_key_text_round_trip_and_fingerprint() -> None:
    key = PrivateKey.from_seed(b"\x07" * 32).public_key
    assert PublicKey.from_text(key.to_text()) == key
    assert key.fingerprint().startswith("ed25519:")
    assert len(key.fingerprint()) == len("ed25519:") + 32
    assert key.fingerprint() == PublicKey.from_text(key.to_text()).fingerprint()
    assert key.fingerprint() != PrivateKey.from_seed(b"\x08" * 32).public_key.fingerprint()


@pytest.mark.parametrize(
    "text",
    ["nocolon", "ed25519:zz", "ed25519:" + "00" * 31, "sm2:" + "00" * 32],
    ids=["no-suite", "not-hex", "short", "unknown-suite"],
)
def test_public_key_text_rejected(text: str) -> None:
    with pytest.raises(ValidationError):
        PublicKey.from_text(text)


def test_private_key_repr_hides_secret() -> None:
    key = PrivateKey.from_seed(b"\x11" * 32)
    assert "11" * 8 not in repr(key)
    assert "secret" not in repr(key)


def test_key_file_written_0600_and_read_back(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not widen the file
    try:
        key = generate_private_key()
        path = tmp_path / "node.key"
        write_private_key(path, key)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_private_key(path) == key


def test_key_file_with_passphrase(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "node.key"
    write_private_key(path, key, passphrase=b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert key.secret not in path.read_bytes()
    assert read_private_key(path, passphrase=b"correct horse") == key
    with pytest.raises(KeyFileError):
        read_private_key(path, passphrase=b"wrong")
    with pytest.raises(KeyFileError):
        read_private_key(path)


def test_key_file_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_private_key(path, generate_private_key())
    with pytest.raises(KeyFileError, match="overwrite"):
        write_private_key(path, generate_private_key())


def test_key_file_with_open_permissions_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_private_key(path, generate_private_key())
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="too open"):
        read_private_key(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_garbage_key_file_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        read_private_key(path)


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        read_private_key(tmp_path / "absent.key")


class _ToySuite:
    """A second suite registered at run time: callers must not need to change."""

    name = "toy"
    public_key_size = 32
    signature_size = 64
    seed_size = 32

    def __init__(self) -> None:
        self.inner = crypto.Ed25519Suite()

    def public_from_secret(self, secret: bytes) -> bytes:
        return self.inner.public_from_secret(secret)

    def sign(self, secret: bytes, message: bytes) -> bytes:
        return self.inner.sign(secret, b"toy" + message)

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        return self.inner.verify(public, b"toy" + message, signature)

    def hash(self, data: bytes) -> bytes:
        return crypto.sha256(b"toy" + data)

    def secret_to_pem(self, secret: bytes, passphrase: bytes | None) -> bytes:
        return self.inner.secret_to_pem(secret, passphrase)

    def secret_from_pem(self, pem: bytes, passphrase: bytes | None) -> bytes:
        return self.inner.secret_from_pem(pem, passphrase)


def test_second_suite_plugs_in_without_caller_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(crypto.SUITES, "toy", _ToySuite())
    toy = generate_private_key("toy")
    ed = PrivateKey.from_seed(toy.secret)
    signature = toy.sign(b"m")
    toy.public_key.verify(b"m", signature)
    # Same secret, different suite: signatures do not cross suites.
    assert not ed.public_key.is_valid_signature(b"m", signature)
    assert toy.public_key != ed.public_key
    assert toy.public_key.fingerprint().startswith("toy:")
