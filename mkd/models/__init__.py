"""The networks: base models (Hub, local folder, e5-small from PyPI wheels), vocabulary trimming, the student
initialization registry, pooling and heads, the frozen probe, and the model inputs (token cache, length-grouped
batches). Imports core and data."""
