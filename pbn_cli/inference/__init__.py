"""Answering questions with a trained model: compare, export."""
