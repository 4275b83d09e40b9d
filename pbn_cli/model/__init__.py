"""Networks and what they give: backbones, embedder, losses and mining, views, embedding, metrics, calibration, checkpoints, trained models."""
