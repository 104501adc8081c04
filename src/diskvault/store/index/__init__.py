"""The LMDB index (the only owner of LMDB) and catching it up with the packs: an accelerator,
rebuilt from pack footers whenever in doubt."""
