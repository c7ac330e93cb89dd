"""Search your own videos.

    python -m search index DIR... --index IDX [model options]   # build or update an index
    python -m search query IDX "a man rides a bike" [--top K] [--per-video N] [--json]
    python -m search status IDX [--json]
    torchrun --nproc_per_node N -m search index DIR... --index IDX   # each rank a share of the files
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# torch's OpenMP threads spin while loader workers hold the cores; must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Subcommand -> module with add_arguments(parser) and main(args) -> exit status. Modules are
# imported only when their command runs (``serve`` lives in search.serve, owned by the web page).
COMMANDS = {
    "index": ("search.cli_index", "build or update an index of the videos under folders"),
    "query": ("search.cli_query", "find videos and time ranges matching a text"),
    "status": ("search.cli_status", "files, windows, model, size, bad and stale files of an index"),
    "serve": ("search.serve", "web page to query an index in a browser"),
}


def build_parser(commands: dict = COMMANDS) -> tuple[argparse.ArgumentParser, dict]:
    """The top-level parser and, per command, (module name, its sub-parser)."""
    parser = argparse.ArgumentParser(prog="python -m search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands_out = {}
    for name, (module_name, help_text) in commands.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text,
                                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        command_parser.set_defaults(_module=module_name)
        commands_out[name] = (module_name, command_parser)
    return parser, commands_out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, commands = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    logging.basicConfig(level=logging.INFO if command == "index" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if command in commands:  # only the chosen command's module is imported, for its options
        module_name, command_parser = commands[command]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            parser.error(f"command {command!r} is not available in this checkout ({err})")
        module.add_arguments(command_parser)
    args = parser.parse_args(argv)
    return int(importlib.import_module(args._module).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
