"""The embedding network: backbones, the embedder, losses and in-batch mining."""
