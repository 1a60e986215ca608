"""response_format json_object and json_schema: answers generated under a grammar built from the schema,
so they parse and follow it whatever the temperature. Real model, real daemon, the openai SDK."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from localllm.config import DEFAULT_MODEL
from tests.conftest import make_settings
from tests.daemon.test_api_openai import sdk

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "population": {"type": "integer"},
        "continent": {"enum": ["Africa", "Asia", "Europe", "America", "Oceania"]},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 2},
    },
    "required": ["city", "population", "continent", "landmarks"],
    "additionalProperties": False,
}
QUESTION = [{"role": "user", "content": "Describe the capital of France as JSON."}]


def city_format(schema=None) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "city", "schema": schema or CITY, "strict": True}}


@pytest.mark.parametrize(("temperature", "seeds"), [(0.0, [None]), (1.0, [1, 2, 3]), (1.5, [4, 5, 6])])
async def test_every_answer_follows_the_schema_at_any_temperature(make_client, temperature, seeds):
    client = sdk(await make_client(make_settings(cache={"enabled": False})))
    for seed in seeds:
        reply = await client.chat.completions.create(
            model=DEFAULT_MODEL, messages=QUESTION, temperature=temperature, seed=seed, max_tokens=160,
            response_format=city_format())
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), CITY)


async def test_json_object_gives_an_object_and_streams_do_too(make_client):
    client = sdk(await make_client(make_settings(cache={"enabled": False})))
    reply = await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, temperature=0,
                                                 max_tokens=120, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    stream = await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, temperature=0,
                                                  max_tokens=160, response_format=city_format(), stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    jsonschema.validate(json.loads(text), CITY)


async def test_structured_answers_are_cached_in_their_own_scope(make_client):
    client = sdk(await make_client())
    first = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=160, response_format=city_format())
    again = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=160, response_format=city_format())
    assert (first.headers["X-LocalLLM-Cache"], again.headers["X-LocalLLM-Cache"]) == ("miss", "hit")
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    other = {**CITY, "required": ["city"]}
    different = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=160, response_format=city_format(other))
    assert different.headers["X-LocalLLM-Cache"] == "miss"
    plain = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=160)
    assert plain.headers["X-LocalLLM-Cache"] == "miss"


@pytest.mark.parametrize(("schema", "says"), [
    ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
    ({"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
      "$ref": "#/$defs/node"}, "refers back to itself"),
    ({"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}, "points at nothing"),
    ({"type": "strin"}, "unknown type"),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}, "'minimum'"),
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}, "'maxLength'"),
    ({"type": ["string", "null"], "maxLength": 5}, "'maxLength'"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(700)}},
     "bytes"),
    (5, "schema"),
])
async def test_schemas_that_cannot_be_enforced_are_clear_400s(make_client, schema, says):
    client = sdk(await make_client())
    for route in ("chat", "explain"):
        with pytest.raises(openai.BadRequestError) as refused:
            if route == "chat":
                await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION,
                                                     response_format=city_format(schema))
            else:
                await client.post("/route", cast_to=object, body={
                    "model": DEFAULT_MODEL, "messages": QUESTION, "response_format": city_format(schema)})
        error = refused.value.body
        assert says in error["message"] and error["param"].startswith("response_format"), error


async def test_json_schema_without_a_schema_is_a_400(make_client):
    client = sdk(await make_client())
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION,
                                             response_format={"type": "json_schema"})
    assert refused.value.body["param"] == "response_format.json_schema"
