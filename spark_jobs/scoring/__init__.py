"""One scoring run (`job`): reject reasons (`bad_rows`), lineage columns (`lineage`), the audit of what was
staged before anything is published (`audit`)."""
