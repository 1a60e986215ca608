"""LangChain's ChatOpenAI (with bind_tools and structured output) and ChatOllama against the real
daemon: the drop-in claim, checked with the libraries apps actually use."""

from __future__ import annotations

import pytest

from localllm.config import DEFAULT_MODEL
from tests.conftest import make_settings

langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai is not installed")
langchain_ollama = pytest.importorskip("langchain_ollama", reason="langchain-ollama is not installed")


def get_weather(city: str, unit: str) -> str:
    """Current weather in a city.

    Args:
        city: the city's name
        unit: celsius or fahrenheit
    """
    return f"18 {unit} in {city}"


async def test_chat_openai_with_bound_tools_and_structured_output(make_client):
    server = await make_client(make_settings(cache={"enabled": False}))
    llm = langchain_openai.ChatOpenAI(model=DEFAULT_MODEL, base_url=str(server.make_url("/v1")), api_key="unused",
                                      temperature=0, max_tokens=200)
    reply = await llm.ainvoke("Say hello.")
    assert reply.content
    calling = llm.bind_tools([get_weather], tool_choice="get_weather")
    message = await calling.ainvoke("What is the weather in Paris?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    assert set(message.tool_calls[0]["args"]) == {"city", "unit"}
    schema = {"title": "City", "type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["name", "country"]}
    structured = llm.with_structured_output(schema, method="json_schema")
    city = await structured.ainvoke("Name a big city and its country.")
    assert set(city) == {"name", "country"}


async def test_chat_ollama(make_client):
    server = await make_client(make_settings(cache={"enabled": False}))
    llm = langchain_ollama.ChatOllama(model=DEFAULT_MODEL, base_url=str(server.make_url("")).rstrip("/"),
                                      temperature=0, num_predict=200)
    reply = await llm.ainvoke("Say hello.")
    assert reply.content
    chunks = [chunk async for chunk in llm.astream("Say hello.")]
    assert "".join(chunk.content for chunk in chunks) == reply.content
    calling = llm.bind_tools([get_weather])
    message = await calling.ainvoke("What is the weather in Paris? Use the tool.")
    assert message.content or message.tool_calls
    for call in message.tool_calls:
        assert call["name"] == "get_weather" and set(call["args"]) <= {"city", "unit"}
