"""Click options shared by `archc`'s commands whose help is read from a registry when --help is shown."""
from __future__ import annotations

import click


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
