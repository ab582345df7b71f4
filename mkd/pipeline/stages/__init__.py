"""The experiment's stages as plain functions of the validated params, one module per dvc.yaml stage (each stage
declares its own module, so editing one stage's code re-runs that stage and what depends on it, not the others).

Their parts live beside them: the grid's cells and where each output goes (mkd/pipeline/grid.py), the encoded
examples and the per-locale evaluation of every model (mkd/pipeline/encoder.py), the fingerprints that decide when
a finished result belongs to the current params (mkd/pipeline/fingerprints.py), the training recipe handed to
`fit` (mkd/training) and the tables collect writes (mkd/pipeline/results.py). The CLI calls the functions through
this package.
"""

from mkd.pipeline.stages.analyze import analyze
from mkd.pipeline.stages.base import build_base
from mkd.pipeline.stages.cell import run_cell
from mkd.pipeline.stages.collect import collect
from mkd.pipeline.stages.logits import cache_logits
from mkd.pipeline.stages.prepare import prepare
from mkd.pipeline.stages.references import references
from mkd.pipeline.stages.teachers import train_teachers
from mkd.pipeline.stages.validate import write_params_stamp

__all__ = ["analyze", "build_base", "cache_logits", "collect", "prepare", "references", "run_cell", "train_teachers",
           "write_params_stamp"]
