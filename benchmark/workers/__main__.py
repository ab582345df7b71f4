"""`python -m benchmark.workers KIND SPEC OUT` (how benchmark.scheduler starts a worker)."""

import sys

from benchmark.workers import main

sys.exit(main(sys.argv[1:]))
