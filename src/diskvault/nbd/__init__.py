"""A snapshot exported as an NBD block device: nbdkit serves it, through a Python plugin
that reads the snapshot with the store's verifying ImageReader (docs/instant-recovery.md)."""
