"""Speed and size benchmarks of mkd (see benchmark/README.md).

`python -m benchmark.cell_speed` times one grid cell of the cpu profile as the pipeline runs it against the
`transformers.Trainer` script a user would write instead, interleaved in one run; `benchmark.pipeline_cost`
times DVC on the paper grid; `benchmark.data_and_models` times reading MASSIVE and counts what vocabulary
trimming and a shallower student save. Each prints markdown tables.
"""
