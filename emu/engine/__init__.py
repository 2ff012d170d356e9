"""The engine: one Unicorn machine with several vCPUs, the executor that runs a scenario
under a scheduler, the native lane, and the records a run produces."""
