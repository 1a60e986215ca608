"""Everything that talks to the outside world: upstream providers, keys, budgets, the
sensitive-data guard. Filled by the fallback and routing issues; nothing lives here yet."""
