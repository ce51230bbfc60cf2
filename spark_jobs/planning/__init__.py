"""Everything a run needs from metadata, before any data is read: the input, table or view, with its
transforms (`tables`, `transforms`), the scoring plan (`plan`), partitions and fingerprints (`partitions`),
and all of it together, with every usage error (`prepare`)."""
