"""The ``correlator`` command line.

Exit codes: 0 done, 2 bad input (config, bundle, argument), 3 nothing found
for that id, 1 anything else. Errors are one clear message on stderr, never
a traceback (``--debug`` shows one for bug reports).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import click

from correlator import __version__
from correlator.errors import CorrelatorError, UserInputError
from correlator.redact import redact

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


def _source_option(f: F) -> F:
    return click.option(
        "--source",
        "source",
        type=click.Path(path_type=Path),
        default=None,
        help="A scenario bundle folder or a folder of bundles (default: configured "
        "backends, else the bundled library).",
    )(f)


def _config_option(f: F) -> F:
    return click.option(
        "--config",
        "config",
        type=click.Path(path_type=Path),
        default=None,
        envvar="CORRELATOR_CONFIG",
        help="Config file (YAML or JSON). Env: CORRELATOR_CONFIG.",
    )(f)


class _LazyGroup(click.Group):
    """A group whose optional commands are imported only when used (or listed in help).

    ``correlator investigate`` must not pay for the service, the lab or the
    generator: importing them costs more than half a second.
    """

    #: Command name -> (module, attribute) of commands defined elsewhere.
    lazy: ClassVar[dict[str, tuple[str, str]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(n for n, (module, _) in self.lazy.items() if _installed(module))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None or cmd_name not in self.lazy:
            return cmd
        return _load(*self.lazy[cmd_name])


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _load(module: str, attr: str) -> click.Command | None:
    """A command defined in another module, if that module is installed."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    cmd = getattr(mod, attr, None)
    return cmd if isinstance(cmd, click.Command) else None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="correlator")
@click.option("--debug", is_flag=True, help="Show tracebacks (for bug reports).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Investigate alerts: ranked, calibrated, evidence-backed probable causes."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.argument("alert_id", required=False)
@click.option(
    "--alert-file",
    "alert_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Read the alert from this JSON file: an Alertmanager webhook body (version 4), "
    "an API v2 alert or a list of them (for when Alertmanager is not reachable). "
    "ALERT_ID, if given, picks one of its alerts; else the first firing one.",
)
@_source_option
@_config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json", "html"]),
    default="text",
    show_default=True,
)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Write here.")
def investigate(
    alert_id: str | None,
    alert_file: Path | None,
    source: Path | None,
    config: Path | None,
    fmt: str,
    output: Path | None,
) -> None:
    """Investigate ALERT_ID (an alert fingerprint, or a unique prefix of one).

    With --alert-file, investigate an alert saved from Alertmanager instead
    (ALERT_ID then picks among the file's alerts).
    """
    from correlator.api import investigate as run
    from correlator.config import load_settings
    from correlator.model import Alert
    from correlator.report import render

    target: str | Alert
    if alert_file is not None:
        from correlator.alerts import load_alert_file

        target = load_alert_file(alert_file, alert_id)
    elif alert_id is None:
        raise UserInputError(
            "give an alert id (run `correlator alerts` to list them) or --alert-file FILE"
        )
    else:
        target = alert_id
    settings = load_settings(config)
    inv = run(target, source=source, config=settings)
    _emit(render(inv, fmt, settings.top_n), output)


@cli.command()
@_source_option
@_config_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def alerts(source: Path | None, config: Path | None, fmt: str) -> None:
    """List the alerts that can be investigated, with their ids."""
    import json

    from correlator.api import alerts as list_alerts
    from correlator.model import format_time

    found = list_alerts(source, config)
    if fmt == "json":
        click.echo(json.dumps([a.to_json() | {"source": a.source} for a in found], indent=2))
        return
    if not found:
        click.echo("No alerts found in the configured sources.")
        return
    click.echo(f"{'ID':<18} {'STARTS':<21} {'ALERT':<24} LABELS")
    for a in sorted(found, key=lambda a: (a.source, a.starts_at)):
        labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k != "alertname")
        click.echo(f"{a.fingerprint:<18} {format_time(a.starts_at):<21} {a.name:<24} {labels}")
    click.echo(f"\n{len(found)} alerts. Investigate one with: correlator investigate <ID>")


@cli.command()
def patterns() -> None:
    """List the installed cause patterns (built-in and plugins)."""
    from correlator.plugins import PATTERN_GROUP, load_group

    for name, cls in load_group(PATTERN_GROUP).items():
        doc = (cls.__doc__ or "").strip().splitlines()
        needs = ", ".join(getattr(cls, "needs", ()))
        click.echo(f"{name:<20} {doc[0] if doc else ''}")
        if needs:
            click.echo(f"{'':<20} needs: {needs}")


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UserInputError(
            f"cannot write {output}: {err.strerror}; choose another --output"
        ) from None
    click.echo(f"wrote {output}", err=True)


_LazyGroup.lazy = {
    "scenarios": ("correlator.generator.cli", "scenarios"),
    "lab": ("correlator.lab", "lab"),
    "serve": ("correlator.service.cli", "serve"),
    "demo": ("correlator.demo.cli", "demo"),
}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn correlator errors into one message and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="correlator", standalone_mode=False)
    except CorrelatorError as err:
        if debug:
            raise
        click.echo(f"error: {redact(str(err))}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not a user mistake: say so briefly
        if debug:
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {redact(str(exc))}\n"
            "this is a bug in correlator; rerun with --debug and report the traceback",
            err=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
