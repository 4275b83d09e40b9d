"""The networks: backbones, the embedder, its views, losses, mining and the recipe that builds them (torch)."""
