"""Foundations every layer may use: errors, atomic files, locks, the workspace and its runs."""
