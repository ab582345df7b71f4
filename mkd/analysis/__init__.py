"""cells.csv in, verdicts, tables and figures out: the statistics, the claims and their gates, the writers. Imports
only core and axes (no torch), so `mkd analyze` runs anywhere."""
