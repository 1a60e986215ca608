"""The daemon room: aiohttp app, OpenAI API, pipeline, llama.cpp engine and scheduler, model files."""
