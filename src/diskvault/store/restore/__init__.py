"""Writing a snapshot's image onto a target: sparse files, patched copies, block devices, and
what this host remembers of targets."""
