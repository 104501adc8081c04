"""Backup registrations as an exclusive operation reads them: a registration renewed between
the listing and the read is still a running backup; a withdrawn one is not."""

from __future__ import annotations

from pathlib import Path

from diskvault.store.backends.local import LocalBackend
from diskvault.store.coordination.locking import BackupLock
from diskvault.store.coordination.writers import WRITERS_PREFIX, running_backups
from diskvault.store.coordination.leases import PLAINTEXT_LEASES


class RenewedRightAfterListing(LocalBackend):
    """A real folder where, right after ``writers/`` is first listed, the backup registered
    there renews: it puts the next number and removes the one just listed."""

    renewed = False

    def list(self, prefix: str) -> list[str]:
        names = super().list(prefix)
        if prefix == WRITERS_PREFIX and names and not self.renewed:
            self.renewed = True
            listed = names[-1]
            token, _, number = listed.removesuffix(".json").rpartition("-")
            self.put(f"{token}-{int(number) + 1}.json", self.get(listed))
            self.delete(listed)
        return names


def test_a_registration_renewed_between_listing_and_reading_still_counts(tmp_path: Path):
    backend = RenewedRightAfterListing(tmp_path)
    with BackupLock(backend, "backup /srv/vm7.img"):
        assert [h.command for h in running_backups(backend, PLAINTEXT_LEASES)] == \
            ["backup /srv/vm7.img"]


def test_a_withdrawn_registration_does_not_count(tmp_path: Path):
    backend = LocalBackend(tmp_path)
    with BackupLock(backend, "backup /srv/vm7.img"):
        pass
    assert running_backups(backend, PLAINTEXT_LEASES) == []
    assert backend.list(WRITERS_PREFIX) == []
