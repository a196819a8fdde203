"""Model files on disk: original checkpoints, the converted bundle, GGUF checks."""
