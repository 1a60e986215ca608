"""Is a local answer weak enough to ask a stronger model? (the confidence cascade)

Signals, each switchable in ``[cascade]``: the model was unsure of its tokens
(low mean log-probability, or high mean entropy of the next-token
distribution), the answer was cut off by max_tokens, or it refuses or admits
it does not know. The first signal that fires names the reason.
"""

from __future__ import annotations

import re

from localllm.config.decision import CascadeSettings
from localllm.vocabulary import Finished

_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|as an ai\b|i (?:can(?:no|')t|am unable to|'m unable to|"
    r"am not able to|'m not able to|do(?: not|n't) know|do(?: not|n't) have (?:enough )?information))"
    r"|\bi (?:can(?:no|')t|am unable to|'m unable to) (?:answer|help|provide|assist)",
    re.IGNORECASE)


def weak_answer_reason(text: str, finished: Finished, settings: CascadeSettings) -> str | None:
    """``cascade_<signal>`` when the answer is weak, else None."""
    if settings.truncated_is_weak and finished.finish_reason == "length":
        return "cascade_truncated"
    if settings.refusal_is_weak and _REFUSAL.search(text[:300]):
        return "cascade_refusal"
    if finished.mean_logprob is not None and finished.mean_logprob < settings.min_mean_logprob:
        return "cascade_low_logprob"
    if finished.mean_entropy is not None and finished.mean_entropy > settings.max_mean_entropy:
        return "cascade_high_entropy"
    if not text.strip():
        return "cascade_empty"
    return None
