"""Entry point: builds the typer app from the command modules.

Each module in ``_COMMAND_MODULES`` exposes ``register(app, bench)`` and imports heavy libraries
lazily inside its commands, so that ``edgefn --help`` answers fast.
"""

from __future__ import annotations

import importlib

import typer

from edgefn.errors import EdgefnError

# One line per command module; keep sorted.
_COMMAND_MODULES: list[str] = [
    "_access",
    "_bench",
    "_cache",
    "_demo",
    "_dev",
    "_incidents",
    "_kv",
    "_plan",
    "_planet",
    "_queues",
    "_roles",
    "_secrets",
    "_simulate",
    "_stats",
    "_tail",
    "_traces",
    "_traffic",
]

app = typer.Typer(
    name="edgefn",
    help="Python edge functions at many locations: develop, deploy, route, plan and simulate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench = typer.Typer(
    help="Benchmarks: print JSON, compare side by side in one run.", no_args_is_help=True
)
app.add_typer(bench, name="bench")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"edgefn.cli.{_name}").register(app, bench)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except EdgefnError as err:
        from edgefn.cli._output import fail_from

        try:
            fail_from(err)
        except typer.Exit as exit_:
            raise SystemExit(exit_.exit_code) from None


if __name__ == "__main__":
    main()
