"""An organisation's identity on disk: its Ethereum account and its X25519 encryption key.

A key directory holds three files, all mode 0600 in a 0700 directory:

``keystore.json``
    The Ethereum account (identity; signs transactions, EIP-712 approvals and peer
    messages) as a standard Web3 Secret Storage keystore (scrypt), readable by geth,
    foundry's ``cast wallet`` and every other Ethereum tool.
``x25519.pem``
    The X25519 private key (peer messages are encrypted to its public half, which is
    registered on chain as the organisation's ``encryptionKey``) as PKCS#8 PEM encrypted
    with the same password (``BestAvailableEncryption``).
``identity.json``
    Public, unencrypted: the address, the X25519 public key and the SHA-256 of the two
    secret files. It lets tools read the public identity without the password and lets
    :meth:`OrgKeys.load` tell a wrong password apart from a modified or corrupted file.

Passwords come from the environment or a file (:func:`password_from_env_or_file`), never
from the command line, where other users could read them in the process list.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import is_checksum_address

KEYSTORE_FILE = "keystore.json"
X25519_FILE = "x25519.pem"
IDENTITY_FILE = "identity.json"
IDENTITY_FORMAT = "pcn-org-keys/1"
PASSWORD_ENV = "PCN_KEYSTORE_PASSWORD"
X25519_PUBLIC_KEY_SIZE = 32

_FILE_MODE = 0o600
_DIR_MODE = 0o700


class KeyStoreError(Exception):
    """A key directory cannot be created or opened (the message names the file and why)."""


@dataclass(frozen=True)
class PublicIdentity:
    """What an organisation registers on chain: its address and X25519 public key."""

    address: str
    x25519_public: bytes


class OrgKeys:
    """An organisation's unlocked keys. Build with :meth:`create` or :meth:`load`."""

    def __init__(self, directory: Path, account: LocalAccount, x25519_private: X25519PrivateKey) -> None:
        self._directory = directory
        self._account = account
        self._x25519_private = x25519_private
        self._x25519_public = _raw_public(x25519_private)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path | str, password: str, *, kdf_iterations: int | None = None) -> OrgKeys:
        """Generate a new identity in ``directory`` (created 0700 if needed).

        ``kdf_iterations`` is the scrypt cost ``n`` of the keystore (a power of two; default
        eth-account's 2**18). Pass a small value such as ``2**4`` only in tests.
        Refuses with :class:`KeyStoreError` if any of the key files already exists.
        """
        directory = Path(directory)
        _check_password(password)
        if kdf_iterations is not None and (kdf_iterations < 2 or kdf_iterations & (kdf_iterations - 1)):
            raise ValueError(f"kdf_iterations must be a power of two >= 2, got {kdf_iterations}")
        if directory.exists() and not directory.is_dir():
            raise KeyStoreError(f"{directory} exists and is not a directory")
        existing = [n for n in (KEYSTORE_FILE, X25519_FILE, IDENTITY_FILE) if (directory / n).exists()]
        if existing:
            raise KeyStoreError(
                f"refusing to overwrite existing keys in {directory}: {', '.join(existing)} already exist"
            )
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(directory, _DIR_MODE)

        account: LocalAccount = Account.create()
        keystore = Account.encrypt(account.key, password, kdf="scrypt", iterations=kdf_iterations)
        keystore_bytes = (json.dumps(keystore, indent=2, sort_keys=True) + "\n").encode()
        x25519_private = X25519PrivateKey.generate()
        pem = x25519_private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password.encode()),
        )
        identity = {
            "format": IDENTITY_FORMAT,
            "address": account.address,
            "x25519_public": "0x" + _raw_public(x25519_private).hex(),
            "sha256": {
                KEYSTORE_FILE: hashlib.sha256(keystore_bytes).hexdigest(),
                X25519_FILE: hashlib.sha256(pem).hexdigest(),
            },
        }
        identity_bytes = (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode()

        written: list[Path] = []
        try:
            # identity.json last: its presence means the directory is complete.
            for name, data in ((KEYSTORE_FILE, keystore_bytes), (X25519_FILE, pem), (IDENTITY_FILE, identity_bytes)):
                _write_new(directory / name, data)
                written.append(directory / name)
            _fsync_dir(directory)
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        return cls(directory, account, x25519_private)

    @classmethod
    def load(cls, directory: Path | str, password: str) -> OrgKeys:
        """Unlock the identity in ``directory``.

        Raises :class:`KeyStoreError` naming the file: ``"wrong password for …"`` when the
        password does not open an intact file; "missing", "corrupted" or "was modified" when
        a file is absent, unparsable or does not match ``identity.json``.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise KeyStoreError(f"no key directory at {directory}")
        identity = _read_identity(directory)
        checksums: dict[str, str] = identity["sha256"]

        blobs: dict[str, bytes] = {}
        for name in (KEYSTORE_FILE, X25519_FILE):
            data = _read_file(directory / name)
            if hashlib.sha256(data).hexdigest() != checksums[name]:
                raise KeyStoreError(
                    f"{directory / name} was modified or is corrupted (its SHA-256 does not match {IDENTITY_FILE})"
                )
            blobs[name] = data

        keystore_path = directory / KEYSTORE_FILE
        try:
            keystore = json.loads(blobs[KEYSTORE_FILE])
        except ValueError as exc:
            raise KeyStoreError(f"{keystore_path} is corrupted: not JSON") from exc
        try:
            private_key = Account.decrypt(keystore, password)
        except ValueError as exc:
            if "MAC mismatch" in str(exc):
                raise KeyStoreError(f"wrong password for {keystore_path}") from None
            raise KeyStoreError(f"{keystore_path} is corrupted: {exc}") from exc
        except (KeyError, TypeError) as exc:
            raise KeyStoreError(f"{keystore_path} is corrupted: {exc!r}") from exc
        account: LocalAccount = Account.from_key(private_key)

        pem_path = directory / X25519_FILE
        try:
            x25519_private = serialization.load_pem_private_key(blobs[X25519_FILE], password.encode())
        except ValueError as exc:
            if "password" in str(exc).lower():
                raise KeyStoreError(f"wrong password for {pem_path}") from None
            raise KeyStoreError(f"{pem_path} is corrupted: {exc}") from exc
        except TypeError as exc:  # e.g. not encrypted
            raise KeyStoreError(f"{pem_path} is corrupted: {exc}") from exc
        if not isinstance(x25519_private, X25519PrivateKey):
            raise KeyStoreError(f"{pem_path} does not hold an X25519 private key")

        if account.address != identity["address"]:
            raise KeyStoreError(f"{keystore_path} holds {account.address}, not the address in {IDENTITY_FILE}")
        if _raw_public(x25519_private) != identity["x25519_public"]:
            raise KeyStoreError(f"{pem_path} does not match the public key in {IDENTITY_FILE}")
        return cls(directory, account, x25519_private)

    @staticmethod
    def exists(directory: Path | str) -> bool:
        """Whether ``directory`` holds a (complete) key directory."""
        return (Path(directory) / IDENTITY_FILE).is_file()

    @staticmethod
    def read_public(directory: Path | str) -> PublicIdentity:
        """The public identity of a key directory, without the password."""
        identity = _read_identity(Path(directory))
        return PublicIdentity(address=identity["address"], x25519_public=identity["x25519_public"])

    # -- properties ---------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def account(self) -> LocalAccount:
        return self._account

    @property
    def address(self) -> str:
        """The checksummed Ethereum address."""
        return str(self._account.address)

    @property
    def x25519_private(self) -> X25519PrivateKey:
        return self._x25519_private

    @property
    def x25519_public(self) -> bytes:
        """The raw 32-byte X25519 public key (the on-chain ``bytes32 encryptionKey``)."""
        return self._x25519_public

    @property
    def public_identity(self) -> PublicIdentity:
        return PublicIdentity(address=self.address, x25519_public=self._x25519_public)

    def __repr__(self) -> str:
        return f"OrgKeys(address={self.address!r}, directory={str(self._directory)!r})"


def password_from_env_or_file(env: str = PASSWORD_ENV, file: Path | str | None = None) -> str:
    """The keystore password, never from the command line.

    In order: the file ``file`` if given; the environment variable ``env``; the file named
    by the environment variable ``env + "_FILE"`` (docker/k8s secrets). One trailing
    newline of a file is removed. Raises :class:`KeyStoreError` if none is set or the
    password is empty.
    """
    if file is not None:
        return _password_from_file(Path(file))
    value = os.environ.get(env)
    if value:
        return value
    file_var = env + "_FILE"
    file_value = os.environ.get(file_var)
    if file_value:
        return _password_from_file(Path(file_value))
    raise KeyStoreError(f"no keystore password: set {env} or {file_var}, or pass a password file")


# -- helpers ------------------------------------------------------------------------------


def _raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not password:
        raise KeyStoreError("the keystore password must be a non-empty string")


def _password_from_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyStoreError(f"cannot read password file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise KeyStoreError(f"password file {path} is not UTF-8") from exc
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise KeyStoreError(f"password file {path} is empty")
    return text


def _write_new(path: Path, data: bytes) -> None:
    """Write a new 0600 file; never follows or replaces an existing file or symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, _FILE_MODE)
    except FileExistsError:
        raise KeyStoreError(f"refusing to overwrite existing {path}") from None
    try:
        os.fchmod(fd, _FILE_MODE)  # the umask may have removed bits, never added: make it exact
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_file(path: Path) -> bytes:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise KeyStoreError(f"{path} is not a regular file")
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyStoreError(f"missing {path}") from None
    except OSError as exc:
        raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from exc


def _read_identity(directory: Path) -> dict[str, Any]:
    """Parse and validate identity.json; x25519_public is returned as bytes."""
    path = directory / IDENTITY_FILE
    raw = _read_file(path)
    try:
        identity = json.loads(raw)
        if not isinstance(identity, dict) or identity.get("format") != IDENTITY_FORMAT:
            raise ValueError(f"format is not {IDENTITY_FORMAT}")
        address = identity["address"]
        if not isinstance(address, str) or not is_checksum_address(address):
            raise ValueError("bad address")
        public_hex = identity["x25519_public"]
        if not isinstance(public_hex, str) or not public_hex.startswith("0x"):
            raise ValueError("bad x25519_public")
        public = bytes.fromhex(public_hex[2:])
        if len(public) != X25519_PUBLIC_KEY_SIZE:
            raise ValueError("bad x25519_public length")
        checksums = identity["sha256"]
        if not isinstance(checksums, dict) or set(checksums) != {KEYSTORE_FILE, X25519_FILE}:
            raise ValueError("bad sha256 table")
        for value in checksums.values():
            if not isinstance(value, str) or len(value) != 64:
                raise ValueError("bad sha256 value")
            bytes.fromhex(value)
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyStoreError(f"{path} is corrupted: {exc}") from exc
    return {"address": address, "x25519_public": public, "sha256": checksums}
