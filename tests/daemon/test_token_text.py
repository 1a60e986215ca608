"""Tokens to streamed text: whole characters only, and no part of a stop sequence ever sent."""

from __future__ import annotations

import random

import pytest

from localllm.daemon.engine.batch_decoder import common_prefix_length
from localllm.daemon.engine.token_text import TokenText


def stream(pieces: list[bytes], stop=()) -> tuple[list[str], bool]:
    text = TokenText(tuple(stop))
    sent = [text.push(piece) for piece in pieces]
    sent.append(text.finish())
    return sent, text.stopped


def test_multibyte_characters_split_across_tokens_arrive_whole():
    data = "Grüße, 世界 🌍!".encode()
    pieces = [data[i:i + 1] for i in range(len(data))]  # one byte per token: the worst split
    sent, _ = stream(pieces)
    assert "".join(sent) == "Grüße, 世界 🌍!"
    assert all("\ufffd" not in chunk for chunk in sent)


@pytest.mark.parametrize("seed", range(20))
def test_stop_sequence_is_cut_wherever_the_tokens_split_it(seed):
    rng = random.Random(seed)
    answer = "The answer is 42.\n###\nignored tail"
    data = answer.encode()
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    sent, stopped = stream(pieces, stop=("###", "never"))
    assert stopped
    assert "".join(sent) == "The answer is 42.\n"
    assert not any("#" in chunk for chunk in sent)


def test_text_that_only_looks_like_a_stop_start_is_released():
    sent, stopped = stream([b"a #", b"# b", b" done"], stop=("###",))
    assert not stopped and "".join(sent) == "a ## b done"
    assert sent[0] == "a "  # "#" held back until the next token shows it is not "###"


def test_earliest_of_several_stop_sequences_wins():
    sent, stopped = stream([b"one END two STOP"], stop=("STOP", "END"))
    assert stopped and "".join(sent) == "one "


def test_without_stop_sequences_everything_is_sent_at_once():
    assert stream([b"abc", b"def"]) == (["abc", "def", ""], False)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ([], [1, 2], 0), ([1, 2, 3], [1, 2, 3], 3), ([1, 2, 3], [1, 2, 4], 2), ([5], [1], 0),
    (list(range(1000)), list(range(999)) + [7], 999), ([1, 2], [1, 2, 3, 4], 2),
])
def test_common_prefix_length(a, b, expected):
    assert common_prefix_length(a, b) == expected
