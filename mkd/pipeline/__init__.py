"""The replication as DVC stages: the grid's cells and paths, the stages, collect's tables, provenance, verify, the
dvc.lock backup and the fanout over workers. The only package that imports every other one."""
