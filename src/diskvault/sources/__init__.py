"""Image sources beyond a plain file read in place: NBD exports and disk-image formats
(docs/vm-sources.md), and point-in-time views of a source that may change while it is read
(docs/point-in-time.md). They hand the backup the same pieces a file's ImageSource does."""
