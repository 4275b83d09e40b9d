"""Evaluation: embeddings, the metrics of docs/metrics.md, plots and reports."""
