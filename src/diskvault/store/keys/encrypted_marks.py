"""Which repositories this account has opened encrypted, as far as this host knows
(``$XDG_STATE_HOME/diskvault/encrypted/``, one empty file named by each repository id).

Whoever can write a repository can delete its key file and turn its config to ``none``: the
config's MAC cannot stop that, since the key that checks it is gone. The next backup would
then write plaintext next to sealed records. A repository once opened encrypted here is
never opened as plaintext here again (encryption.open_cipher refuses it)."""

from __future__ import annotations

from pathlib import Path

from ..host.durable import PRIVATE_FOLDER_MODE, atomic_replacement
from ..host.user_folders import user_state_folder


def marks_folder() -> Path:
    return user_state_folder() / "encrypted"


def mark_of(repository_id: str) -> Path:
    """The mark's path; the id is 32 hex digits (the config is validated before)."""
    return marks_folder() / repository_id


def remember_encrypted(repository_id: str) -> None:
    """Note that the repository is encrypted. Best effort, as restore's notes: without a
    state folder we may write, the other signs (a key file, sealed records) still count."""
    path = mark_of(repository_id)
    if path.exists():
        return
    try:
        path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
        with atomic_replacement(path):
            pass
    except OSError:
        pass


def was_encrypted(repository_id: str) -> bool:
    return mark_of(repository_id).exists()
