"""``greenshift datasets`` and ``greenshift models``: the registries."""

from __future__ import annotations

import argparse

from greenshift.cli.common import AddCommand, console, print_json, table


def add_commands(command: AddCommand) -> None:
    """Add ``datasets`` and ``models``."""
    p = command("datasets", "list the available data sets", "List the registered data sets.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_datasets)

    p = command("models", "list the available backbones", "List the registered backbones.")
    p.add_argument("--all", action="store_true", help="include the tiny test-only variants")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_models)


def cmd_datasets(args: argparse.Namespace) -> int:
    """``greenshift datasets``."""
    from greenshift.data import list_datasets

    infos = list_datasets()
    if args.json:
        print_json(
            [
                {
                    "name": i.name,
                    "description": i.description,
                    "needs_data_dir": i.needs_data_dir,
                    "default_image_size": i.default_image_size,
                }
                for i in infos
            ]
        )
        return 0
    columns = [(name, "left") for name in ("name", "image size", "needs --data-dir", "description")]
    rows = [
        (i.name, str(i.default_image_size), "yes" if i.needs_data_dir else "no", i.description) for i in infos
    ]
    console().print(table("data sets", columns, rows))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``greenshift models``."""
    from greenshift.models import list_models, model_info

    infos = [model_info(name) for name in list_models(include_tiny=args.all)]
    if args.json:
        print_json([{"name": i.name, "description": i.description, "tiny": i.tiny} for i in infos])
        return 0
    rows = [(i.name + (" (test only)" if i.tiny else ""), i.description) for i in infos]
    out = console()
    out.print(table("backbones", [("name", "left"), ("description", "left")], rows))
    if not args.all:
        out.print("tiny test-only variants are hidden; --all shows them")
    return 0
