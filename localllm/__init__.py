"""localllm: a local-first LLM daemon.

The distribution installs the repository's top-level rooms under this one
namespace: ``localllm.daemon``, ``localllm.fallback``, ``localllm.store`` and
``localllm.cli``. This package holds what every room shares: where files live,
the typed configuration, and the user-facing errors.
"""

__version__ = "0.1.0"
