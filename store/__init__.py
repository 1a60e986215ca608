"""SQLite storage through sqlite-utils: migrations, the request log, the semantic cache
(index, verifier) and the embedder."""
