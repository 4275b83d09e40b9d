"""`pbn eval`: every figure with its interval, baselines that learn nothing, plots and the report."""
