"""The bank's day: its business date, the cutoff schedule, and each shard's cut to the next date."""
