"""The daemon room, by job:

- ``http``: the aiohttp app, its door (Host, Origin, token, size checks), the OpenAI
  endpoints, POST /v1/route, SSE, and starting the server;
- ``pipeline``: the runtime (every part, opened once) and the pipeline that decides
  where a request goes and acts on that decision;
- ``engine``: llama.cpp, the batching scheduler and its decoder, the loaded models;
- ``models``: model files on disk, the catalog, pulling and reading GGUF headers.
"""
