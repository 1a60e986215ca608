"""How a burst of prompts shares decode steps (engine.prompt_packing), on the real model."""

from __future__ import annotations

import pytest

from localllm.config import EngineSettings
from localllm.daemon.engine.batch_decoder import BatchDecoder
from localllm.daemon.engine.llama_engine import GenerationJob, LlamaEngine
from localllm.daemon.engine.step_cost import StepCost
from localllm.vocabulary import Sampling, TextDelta
from tests.daemon.test_batching import QUESTIONS


@pytest.fixture
def loaded_engine(default_model_file):
    engines: list[LlamaEngine] = []

    def load(**engine) -> LlamaEngine:
        settings = EngineSettings.model_validate({"n_ctx": 512, "n_threads": 2, "n_parallel": 4, **engine})
        loaded = LlamaEngine("smollm2", default_model_file, settings)
        loaded.load()
        engines.append(loaded)
        return loaded

    yield load
    for engine in engines:
        engine.close()


def burst(engine: LlamaEngine) -> list[GenerationJob]:
    return [GenerationJob(engine.tokenize(engine.render_chat([{"role": "user", "content": q}])), 8,
                          Sampling(temperature=0.0)) for q in QUESTIONS[:4]]


def cost_line(fixed_s: float, per_token_s: float) -> StepCost:
    cost = StepCost()
    for tokens in (1, 32, 256):
        cost.observe(tokens, fixed_s + per_token_s * tokens)
    return cost


@pytest.mark.parametrize(("fixed_s", "per_token_s", "read_in_first_step"), [
    (0.009, 0.007, [True, False, False, False]),  # a CPU: one prompt per step
    (0.005, 0.00001, [True, True, True, True]),  # a GPU: a step costs the same at any size
])
def test_how_many_prompts_share_a_step_follows_what_a_step_costs(loaded_engine, fixed_s, per_token_s,
                                                                  read_in_first_step):
    engine = loaded_engine()
    decoder = BatchDecoder(engine)
    try:
        decoder.step_cost = cost_line(fixed_s, per_token_s)
        events: list[list] = []
        for job in burst(engine):
            events.append([])
            decoder.admit(job, events[-1].append)
        decoder.step()
        # a request whose prompt has been read has its first token (an answer's first piece)
        assert [bool(got) for got in events] == read_in_first_step
        assert all(isinstance(got[0], TextDelta) for got in events if got)
        for _ in range(3):
            decoder.step()
        assert all(events)
        if not all(read_in_first_step):  # later prompts copied the chat template's head from the first
            assert decoder.reused_tokens > 0
    finally:
        decoder.close()


def test_packing_all_fills_the_step_whatever_it_costs(loaded_engine):
    engine = loaded_engine(prompt_packing="all")
    decoder = BatchDecoder(engine)
    try:
        assert not decoder.step_cost.known  # no timing decodes at load in this mode
        events: list[list] = []
        for job in burst(engine):
            events.append([])
            decoder.admit(job, events[-1].append)
        decoder.step()
        assert all(events)
    finally:
        decoder.close()


def test_the_step_cost_is_timed_at_load_and_kept_up_to_date(loaded_engine):
    engine = loaded_engine()
    decoder = BatchDecoder(engine)
    try:
        assert decoder.step_cost.known and decoder.step_cost.per_token_s > 0
        assert all(not slot.cached for slot in decoder.slots)  # the timing decodes left no cells behind
        seen = (decoder.step_cost.fixed_s, decoder.step_cost.per_token_s)
        decoder.admit(burst(engine)[0], lambda event: None)
        decoder.step()
        assert (decoder.step_cost.fixed_s, decoder.step_cost.per_token_s) != seen  # real steps are timed
    finally:
        decoder.close()
