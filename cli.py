"""Thin entry point: ``python cli.py ...`` is the same as the installed ``llmhni`` command."""

from llmhni_local.cli import main

if __name__ == "__main__":
    main()
