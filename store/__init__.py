"""SQLite storage through sqlite-utils: request log, semantic cache, embeddings.
Filled by the store issue; nothing lives here yet."""
