"""The append-only mark: a repository whose config says ``append_only`` is never deleted
from by this program -- no prune, delete, compact or unprotect, and repair leaves damaged
packs where they are. It is a promise of the clients, not of the storage: what keeps a
stolen host from clearing it is the storage's own rights (docs/threat-model.md).
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import RepositoryAppendOnly
from ..store.format.config import read_config, write_config
from ..store.keys.encryption import config_mac
from ..store.storage import Storage


def is_append_only(storage: Storage) -> bool:
    """The mark as the storage holds it now, or as it was when the repository was opened:
    either one refuses (a mark set by another host meanwhile counts)."""
    return storage.config.append_only or read_config(storage.backend).append_only


def refuse_if_append_only(storage: Storage, command: str) -> None:
    """RepositoryAppendOnly (exit 77) if ``command`` may not run here; call it under the
    writer lock, before anything is removed."""
    if is_append_only(storage):
        raise RepositoryAppendOnly(
            f"repository {storage.location} is append-only: {command} would delete from it "
            f"and was refused, nothing was changed; from an administrator's host, 'diskvault "
            f"config -r {storage.location} --append-only off' lifts the mark")


def set_append_only(storage: Storage, append_only: bool, lock_wait_s: float = 0.0) -> bool:
    """Set or clear the mark in the repository's config (re-authenticated when encrypted),
    under the writer lock; False if it already was so. Refused by the storage where these
    credentials may not write the config (RepositoryReadOnly)."""
    command = f"config --append-only {'on' if append_only else 'off'}"
    with storage.writer_lock(command, lock_wait_s):
        if read_config(storage.backend).append_only == append_only:
            return False
        config = replace(storage.config, append_only=append_only)
        if config.encrypted:
            config = replace(config, mac=config_mac(storage.cipher, config))
        write_config(storage.backend, config)
        storage.config = config
    return True
