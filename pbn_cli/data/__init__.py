"""Paintings as data: the one image door, the image cache, CSVs, paths, synthetic sets."""
