"""A trained model and its storage: checkpoints, the embedding store, the onnx engine and its export, TrainedModel."""
