"""Studies beside the grid: the same cells under designs the grid does not cover (mkd.studies.budget)."""
