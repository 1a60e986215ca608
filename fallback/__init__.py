"""Everything that talks to the outside world: upstream providers (OpenAI, Anthropic,
OpenAI-compatible), their keys in the OS keyring, retries and circuit breakers, and budgets.
What may be sent is decided before anything here is called (``localllm.decision``)."""
