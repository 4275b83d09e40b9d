"""Training: configuration and presets, data from the cache, augmentation, the loop, checkpoints."""
