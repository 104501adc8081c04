"""Sources of images beyond a plain file: point-in-time views of a source that may change
while it is read (docs/point-in-time.md)."""
