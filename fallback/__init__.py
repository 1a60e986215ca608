"""Everything that talks to the outside world: upstream providers (OpenAI, Anthropic,
OpenAI-compatible), their keys in the OS keyring, retries and circuit breakers, and budgets.
The sensitive-data guard joins here with the routing issue."""
