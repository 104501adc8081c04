"""This machine's files, folders and devices: exclusive and atomic file writes, the user's cache
and state folders, whether a device is in use."""
