"""Click options shared by `archc`'s commands whose help is read from a registry when --help is shown."""
from __future__ import annotations

import math

import click

from archc.seeds import MAX_SEED


class SourceOption(click.Option):
    """An option that takes a data source: its help ends with every registered source (`archc.data`), listed
    only when shown, since importing the registry loads numpy, which `archc validate` never needs."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from archc.data.sources import sources_help

        lead, self.help = self.help, f"{self.help} Sources: {sources_help()}."
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = lead


# --seed: what numpy's generators (>= 0) and torch's manual_seed (< 2**64) both take; the spec's seeds are the same
# (archc.seeds.MAX_SEED), so `--seed -1` is a usage error, not an internal one inside numpy
SEED = click.IntRange(0, MAX_SEED)

# --stop-after's choices: archc.pipeline's PASSES and BUILD_PASSES by name, written out so that the command line
# does not import the compiler (tests/cli/test_startup.py checks they match)
PASS_NAMES = ("load", "check", "expand", "infer")
BUILD_PASS_NAMES = (*PASS_NAMES, "lower", "export")

# --exporter's choices, the default first: archc.export.onnx.EXPORTERS, written out for the same reason (the test
# checks them too). emit: archc writes the ONNX from each op's emitter; torchscript, dynamo: torch.onnx traces.
EXPORTER_NAMES = ("emit", "torchscript", "dynamo")
EXPORTER = click.option(
    "--exporter", type=click.Choice(EXPORTER_NAMES), default=EXPORTER_NAMES[0], show_default=True,
    help="emit: archc writes the ONNX itself from each op's emitter (torch.onnx is not imported); torchscript "
         "(the fallback) or dynamo: torch.onnx traces the module. Parity against torch either way.")


class OptionValueError(click.BadParameter):
    """A bad option value as archc's other user errors read: one line `error: --OPTION: expected …, received …`
    and exit 1 (click's own BadParameter prints the usage text and exits 2)."""

    exit_code = 1

    def show(self, file=None) -> None:  # noqa: ANN001 (click's signature)
        name = self.param.opts[0] if self.param is not None and self.param.opts else "option"
        click.echo(f"error: {name}: {self.message}", err=True)


class Number(click.ParamType):
    """A float option that must be a finite number, with an optional lower bound (`low`, open with `open_low`):
    `--max-drop nan` or `--lr inf` names the option instead of running with it. Every float option of every
    command uses it (a test walks them)."""

    name = "number"

    def __init__(self, low: float | None = None, open_low: bool = False) -> None:
        self.low, self.open_low = low, open_low

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                raise OptionValueError(f"expected a number, received {str(value)!r}", ctx=ctx, param=param) from None
        if not math.isfinite(number):
            raise OptionValueError(f"expected a finite number, received {value}", ctx=ctx, param=param)
        if self.low is not None and (number <= self.low if self.open_low else number < self.low):
            sign = ">" if self.open_low else ">="
            raise OptionValueError(f"expected a number {sign} {self.low:g}, received {value}", ctx=ctx, param=param)
        return number

    def get_metavar(self, param, ctx=None) -> str:  # noqa: ANN001 (click's signature changed across versions)
        return "FLOAT"


class Threads(click.ParamType):
    """--threads N: an integer from 1 to archc.threads.MAX_THREADS; anything else is one line naming the option,
    exit 1 (not click's usage text). Unset: archc.threads decides from the cores and the load."""

    name = "integer"

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        from archc.threads import MAX_THREADS

        text = str(value).strip()
        try:
            n = value if isinstance(value, int) and not isinstance(value, bool) else int(text)
        except ValueError:
            n = None
        if n is None or not 1 <= n <= MAX_THREADS:
            raise OptionValueError(f"expected a thread count from 1 to {MAX_THREADS}, received {text!r:.80}",
                                   ctx=ctx, param=param)
        return n

    def get_metavar(self, param, ctx=None) -> str:  # noqa: ANN001 (click's signature changed across versions)
        return "N"

