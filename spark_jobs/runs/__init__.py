"""What every writing command shares: the table lock (`lock`), the run-history table (`history`), and the two
together, "under the lock, with a history row" (`locked_run`)."""
