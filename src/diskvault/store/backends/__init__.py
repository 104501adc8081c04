"""Where a repository's bytes live: the Backend protocol and its implementations (a local
folder, an S3 bucket), and the parsing of `-r`."""
