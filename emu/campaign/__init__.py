"""Fuzzing campaigns: a product of scenarios x strategies x seeds, cut into shards and run
on local worker processes or a Dask cluster until a time budget, resumable, with findings
deduplicated by signature, a live status and a report."""
