"""Answering with a trained model: compare, search, predict."""
