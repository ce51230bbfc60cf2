"""Where a run's rows wait and how readers are switched to them: the staging area (`staging`), output tables
and `_published.jsonl` (`output`), publishing by output format (`publish`), retention (`versions`), rollback
(`rollback`), the PostgreSQL serving copy (`serving`)."""
