"""Speed benchmarks of mkd (see benchmark/README.md).

`python -m benchmark.cell_speed` times one grid cell of the cpu profile as the pipeline runs it against the
`transformers.Trainer` script a user would write instead, interleaved in one run, and prints markdown tables.
"""
