"""The HTTP edge: app and door, OpenAI endpoints, POST /v1/route, SSE, starting the server."""
