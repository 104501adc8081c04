"""This machine's files, folders and devices: exclusive and atomic file writes, the user's cache
and state folders (an object store's records kept here, the snapshots this host saw), whether a
device is in use."""
