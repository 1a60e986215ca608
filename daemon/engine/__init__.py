"""llama.cpp: one engine per model, its batching scheduler and decoder, and the registry of loaded models."""
