"""Running diskvault unattended: what each run of backup, prune and check left behind on this
host (runs), which series are overdue (health), the commands told of it (hooks), the figures
a monitor scrapes (metrics), the timers that start the runs (schedule) and a page to look at
(report). It sits above the store, as the CLI does, and knows nothing of click."""
