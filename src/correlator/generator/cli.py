"""``scenarios``: generate incident bundles and describe them (a click group).

The main ``correlator`` CLI mounts this group; it also runs on its own::

    python -m correlator.generator.cli generate --seed 5001 --services 40 --cause db_overload
    python -m correlator.generator.cli generate --seed 6001 --services 30 --wild
    python -m correlator.generator.cli show fixtures/scenarios/checkout-bad-deploy
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from correlator.generator.faults import CAUSES, SEVERITIES
from correlator.generator.wild import WILD_CAUSES

ALL_CAUSES = tuple(dict.fromkeys(CAUSES + WILD_CAUSES))

__all__ = ["scenarios"]


@click.group(name="scenarios")
def scenarios() -> None:
    """Generate labeled incident bundles and show what happened in one."""


@scenarios.command()
@click.option(
    "--seed",
    type=int,
    required=True,
    help="Random seed (library 1000-1999, calibration 2000-4999, evaluation 5000+).",
)
@click.option("--services", type=click.IntRange(5, 5000), default=20, show_default=True)
@click.option(
    "--hours",
    type=float,
    default=None,
    help="Window length in hours (default 2; with --wild, drawn from the seed).",
)
@click.option("--minutes", type=float, default=None, help="Window length in minutes.")
@click.option(
    "--cause",
    type=click.Choice(ALL_CAUSES),
    default=None,
    help="Fault to inject (default: a built-in cause drawn from the seed; with --wild, any "
    "wild fault). cpu_saturation and code_fault need --wild.",
)
@click.option(
    "--mode",
    type=click.Choice(["service", "pod", "exceptions", "wrong_value", "stress"]),
    default=None,
    help="With --wild: the fault's variant (network_delay: service or pod; code_fault: "
    "exceptions or wrong_value). Default: drawn from the seed.",
)
@click.option(
    "--wild",
    is_flag=True,
    help="Draw the conventions too (scrape interval 1/15/60 s, metric names and labels, "
    "baseline length, noise) and faults only some modalities show; truth.visible_in names them.",
)
@click.option("--severity", type=click.Choice(list(SEVERITIES)), default=None)
@click.option("--target", default=None, help="Name of the node the fault hits.")
@click.option("--traces", type=int, default=None, help="Number of sampled traces.")
@click.option("--name", default=None, help="Bundle name (default: <service>-<cause>).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to create the bundle in.",
)
@click.option("--gzip", "compress", is_flag=True, help="Gzip the data files.")
def generate(
    seed: int,
    services: int,
    hours: float | None,
    minutes: float | None,
    cause: str | None,
    severity: str | None,
    target: str | None,
    traces: int | None,
    name: str | None,
    out: Path,
    compress: bool,
    mode: str | None = None,
    wild: bool = False,
) -> None:
    """Generate one scenario bundle into OUT/<name>."""
    from correlator.generator.api import generate as gen
    from correlator.generator.api import write

    if hours is not None and minutes is not None:
        raise click.UsageError("give --hours or --minutes, not both")
    duration = (
        int(hours * 3600)
        if hours is not None
        else int(minutes * 60)
        if minutes is not None
        else (None if wild else 7200)
    )
    if mode is not None and not wild:
        raise click.UsageError("--mode needs --wild")
    try:
        scen = gen(
            seed,
            services=services,
            duration=duration,
            cause=cause,
            severity=severity,
            target=target,
            traces=traces,
            name=name,
            wild=wild,
            mode=mode,
        )
    except (ValueError, KeyError) as exc:
        raise click.UsageError(str(exc)) from exc
    path = write(scen, out / scen.name, compress=compress)
    click.echo(f"wrote {path}")
    click.echo(f"truth: {scen.truth['cause']} in {scen.truth['service']} at {scen.truth['start']}")
    for a in scen.alerts:
        click.echo(
            f"alert {a['fingerprint']} {a['labels']['alertname']} "
            f"{_where(a['labels'])} since {a['startsAt']}"
        )


def _where(labels: dict[str, str]) -> str:
    for key in ("service", "service_name", "job", "application"):
        if labels.get(key):
            return labels[key]
    return ""


@scenarios.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
def show(bundle: Path) -> None:
    """Describe a bundle: system, fault, timeline, alerts (with fingerprints) and truth."""
    from correlator.generator.describe import show_text

    scen_file = bundle / "scenario.json"
    if not scen_file.is_file():
        raise click.UsageError(f"{bundle} has no scenario.json; is it a scenario bundle?")
    try:
        doc = json.loads(scen_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"{scen_file}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    topo_file = bundle / "topology.json"
    topo = json.loads(topo_file.read_text(encoding="utf-8")) if topo_file.is_file() else None
    click.echo(show_text(doc, topo))


if __name__ == "__main__":  # pragma: no cover
    scenarios()
