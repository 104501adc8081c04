"""The key of an encrypted repository: the key file, where the passphrase comes from, and the
cipher a repository is opened with."""
