"""Who may write and who reads: the exclusive writer lock, backup and reader registrations,
their leases and heartbeat, and the disk-space reserve."""
