"""Image sources that need a reader other than a plain file: NBD exports, disk-image formats,
point-in-time views. They hand the backup the same pieces a file's ImageSource does."""
