"""Encryption at rest for cookie values: AES-256-GCM, key from QUAERO_SECRET_KEY or a 0600 key file."""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from quaero.config import KEY_FILE, read_or_create_secret_file
from quaero.errors import FailedPrecondition, Reason


def load_key(data_dir: Path, configured: str = "") -> bytes:
    """The key from `configured` (QUAERO_SECRET_KEY), else the data directory's key file (made if missing)."""
    text = configured or read_or_create_secret_file(
        data_dir / KEY_FILE, lambda: base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode())
    try:
        raw = base64.urlsafe_b64decode(text.encode())
        if len(raw) == 32:
            return raw
    except ValueError:
        pass
    # Any other passphrase is stretched to a 256-bit key.
    return hashlib.sha256(text.encode()).digest()


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._key = key

    def derived_key(self, purpose: str) -> bytes:
        """A key for another use (e.g. signing page tokens), derived from this one: never the key itself."""
        return hashlib.sha256(b"quaero\x00" + purpose.encode() + b"\x00" + self._key).digest()

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], context.encode())
        except InvalidTag:
            raise FailedPrecondition(
                Reason.SECRET_KEY_MISMATCH, "stored credentials cannot be decrypted with this manager's secret key "
                "(QUAERO_SECRET_KEY or secret.key in the data directory changed); import them again") from None
