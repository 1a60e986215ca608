"""The `localllm` command line: thin commands that parse, call the library, print."""
