"""`python -m localllm.cli` runs the `localllm` command."""

from localllm.cli.main import main

main()
