"""A repository's cipher: made at init, opened with the passphrase (or a master key handed
over by the process that unlocked it), and the config's MAC checked with it.

The key file is the backend object ``keys/repokey``. A plaintext repository (format version
1, or 2 with ``encryption.mode`` none) gets ``NoEncryption`` and never asks for a
passphrase: the passphrase is a callable, called only when a key file must be opened.
The key file's format (keys.py, which loads argon2 and cryptography) is imported by the
functions that use it, so opening a plaintext repository loads neither.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

from ...errors import AuthenticationFailed, BadInput, CorruptData
from ..backends.protocol import Backend
from ..format.config import RepositoryConfig, read_config
from ..format.crypto import (SEAL_OVERHEAD_BYTES, Encrypted, Keys, NoEncryption, RecordCipher,
                             RecordKind, associated_data)
from ..format.snapshot_store import SnapshotStore
from ..format.snapshots import SNAPSHOTS_PREFIX
from ..host.user_folders import cached_records_folder
from ..host.record_cache import RecordCache
from .encrypted_marks import mark_of, remember_encrypted, was_encrypted

KEY_FILE = "keys/repokey"

Passphrase = str | Callable[[], str] | None  # None: from the environment or a terminal


def passphrase_text(passphrase: Passphrase, confirm: bool = False) -> str:
    if isinstance(passphrase, str):
        return passphrase
    if passphrase is not None:
        return passphrase()
    from .passphrase import get_passphrase, terminal_prompt
    return get_passphrase(confirm=confirm, prompt=terminal_prompt())


def config_mac(cipher: RecordCipher, config: RepositoryConfig) -> str:
    return cipher.authenticator(associated_data(RecordKind.CONFIG, config.repository_id),
                                config.canonical_json()).hex()


def create_cipher(backend: Backend, config: RepositoryConfig,
                  passphrase: Passphrase) -> tuple[RepositoryConfig, RecordCipher]:
    """For a new repository: the cipher, and the config carrying its MAC. The key file
    is put here (before the config: a folder without config is not a repository yet)."""
    if not config.encrypted:
        return config, NoEncryption()
    from .key_file import new_key_file  # on use: see the module docstring

    key_file, keys = new_key_file(passphrase_text(passphrase, confirm=True))
    backend.put(KEY_FILE, key_file)
    remember_encrypted(config.repository_id)
    cipher = Encrypted(keys, config.hides_lengths)
    return dataclasses.replace(config, mac=config_mac(cipher, config)), cipher


def open_cipher(backend: Backend, config: RepositoryConfig, passphrase: Passphrase = None,
                keys: Keys | None = None) -> RecordCipher:
    """The repository's cipher, the config proven unedited with it. ``keys`` (already
    unlocked elsewhere) skips the passphrase."""
    where = backend.location
    if not config.encrypted:
        # A config turned to "none" by hand would make the next backup write plaintext.
        found = encryption_found(backend, config)
        if found:
            raise CorruptData(f"config of repository {where} says it is not encrypted, but "
                              f"{found}: the config was edited; put back the original "
                              f"config (and the key file, with 'diskvault key import' from "
                              f"a key export)")
        return NoEncryption()
    if keys is None:
        from .key_file import unlock  # on use: see the module docstring

        keys = unlock(read_key_file(backend), passphrase_text(passphrase))
    cipher = Encrypted(keys, config.hides_lengths)
    if not secrets.compare_digest(config_mac(cipher, config), config.mac):
        raise AuthenticationFailed(f"config of repository {where} failed authentication: it "
                                   f"was edited or damaged (or belongs to another key); put "
                                   f"back the original config")
    remember_encrypted(config.repository_id)
    return cipher


def encryption_found(backend: Backend, config: RepositoryConfig) -> str | None:
    """What shows that a repository whose config says "none" is encrypted, or None: its
    key file, this account's mark of it (encrypted_marks), or a sealed snapshot record
    (one is read: a plaintext record is JSON, a sealed one starts with a random nonce). A
    copy of that record in this host's cache stands in for a GET: records never change, and
    the cache holds them as the bucket gave them."""
    if backend.stat(KEY_FILE) is not None:
        return f"it holds a key file ({KEY_FILE})"
    if was_encrypted(config.repository_id):
        return f"it was opened encrypted from this account before ({mark_of(config.repository_id)})"
    name = next(iter(SnapshotStore(backend).record_names()), None)
    if name is not None:
        cache = RecordCache(cached_records_folder(config.repository_id, backend.place),
                            SNAPSHOTS_PREFIX)
        try:
            record = cache.get(name) or backend.get(name)
        except FileNotFoundError:  # deleted since the listing: nothing to tell
            return None
        if len(record) >= SEAL_OVERHEAD_BYTES and not record.lstrip().startswith(b"{"):
            return f"its snapshot record {name} is sealed"
    return None


def read_key_file(backend: Backend) -> bytes:
    try:
        return backend.get(KEY_FILE)
    except FileNotFoundError:
        raise CorruptData(f"repository {backend.location} is encrypted but its key file "
                          f"{KEY_FILE} is missing: restore it with 'diskvault key import' "
                          f"from a key export") from None


def change_key_passphrase(backend: Backend, old: Passphrase, new: Passphrase) -> None:
    """Reseal the master key under a new passphrase: no data is rewritten."""
    from .key_file import change_passphrase, unlock  # on use: see the module docstring

    key_file = read_key_file(backend)
    old_text = passphrase_text(old)
    unlock(key_file, old_text)  # a wrong old passphrase fails before a new one is asked
    backend.put(KEY_FILE, change_passphrase(key_file, old_text, passphrase_text(new, True)))


def export_key_file(backend: Backend, config: RepositoryConfig) -> str:
    from .key_file import export_key  # on use: see the module docstring

    return export_key(read_key_file(backend), config.repository_id)


def import_key_file(backend: Backend, export: str) -> None:
    """Put back the key file of the repository behind ``backend`` from an export of its key."""
    config = read_config(backend)
    if not config.encrypted:
        raise BadInput(f"repository {backend.location} is not encrypted: it has no key to "
                       f"import")
    from .key_file import import_key  # on use: see the module docstring

    backend.put(KEY_FILE, import_key(export, config.repository_id))
