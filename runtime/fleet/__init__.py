"""Fleet data: recording, clips, replay, residency policy, audit, anonymisation and encryption."""
