"""Pictures, maps, metrics and the report of a run: they read what the run wrote."""
