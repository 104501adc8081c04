"""The write path: image sources, the chunker, change maps, the backup's order of operations and
its write session."""
