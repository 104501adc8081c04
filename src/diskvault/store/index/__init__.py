"""This host's caches of a repository: the LMDB index (the only owner of LMDB) and catching it
up with the packs, an accelerator rebuilt from pack footers whenever in doubt; and an object
store's snapshot records, checked on every read as if fetched."""
