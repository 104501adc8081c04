"""Who may write and who reads: the writer lock, leases and reader registrations, their
heartbeat, and the disk-space reserve."""
