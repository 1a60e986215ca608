"""The runtime (every part, opened once) and the pipeline that decides and acts on each request."""
