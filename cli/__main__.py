"""`python -m localllm.cli` runs the `localllm` command."""

from .main import main

main()
