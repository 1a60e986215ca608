"""Model files: the models directory, the catalog, pulling (resumable, verified) and reading GGUF headers."""
