"""Side-by-side benchmarks of diskvault against borg, restic and casync (see README.md)."""
