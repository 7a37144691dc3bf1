"""Several instances sharing one Redis: votes, the event log, session leases."""
