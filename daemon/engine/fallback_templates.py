"""Chat formats for GGUFs that carry no template, by architecture: the model family's documented turns.

Base-model conversions (Gemma 3 270M among them) often leave ``tokenizer.chat_template`` out, though
the family has one chat format whose control tokens its tokenizer knows. Without this such a model
could only serve raw completions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyFormat:
    template: str  # jinja2, as GGUF chat templates are (BOS comes from tokenizing, not from here)
    # Control tokens that also end an answer: a base model may open the next turn instead of closing its own.
    ends: tuple[str, ...] = ()


# Gemma's turns (ai.google.dev/gemma/docs/core/prompt-structure): user and model only, a system
# prompt goes before the first user turn's text. Tool results arrive as user turns already.
GEMMA = FamilyFormat(
    template=(
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
        "{%- for message in loop_messages -%}"
        "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
        "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
        "{{ (message['content'] | trim) + '<end_of_turn>\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"),
    ends=("<start_of_turn>",))

_BY_ARCHITECTURE = {"gemma": GEMMA, "gemma2": GEMMA, "gemma3": GEMMA}


def family_format(architecture: str | None) -> FamilyFormat | None:
    """The family's chat format for a GGUF without a template, or None when the family has no known one."""
    return _BY_ARCHITECTURE.get(architecture or "")
