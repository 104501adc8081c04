"""diskvault: deduplicating, content-addressed backups of disk images and block devices."""

__version__ = "0.1.0"
