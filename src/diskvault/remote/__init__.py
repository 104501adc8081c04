"""The far side of an ``ssh://`` repository: ``diskvault serve-repository`` serves a local
folder's Backend over the SSH channel (the client is store/backends/ssh.py), append-only
when the administrator says so in authorized_keys (docs/ssh.md)."""
