"""The daemon around the pipeline: the `daemon` (start, reload, stop), one `scheduler` poller per
target, and what a long-running process needs (`release` of memory, `systemd` notifications)."""
