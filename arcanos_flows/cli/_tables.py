"""Tables that stay readable on a narrow terminal (80 columns).

Rich shrinks a table that is wider than the terminal by cutting its cells (``authenticat…``) or by wrapping them
a word per line. The CLI's tables avoid both:

- names a reader looks for (step names, statuses, incident classes, ids) are :func:`key_column` cells: never
  wrapped at a word nor cut; folded onto a second line only if nothing else helps;
- long text (reasons, errors) is not a column: it goes below the table as a numbered list (:func:`notes`), the
  table's ``#`` column pointing to it;
- a table offers layouts from the most to the least complete (:class:`FirstThatFits`): the first whose natural
  width fits the terminal is shown, so low-value columns are dropped (or moved into the caption) only when the
  terminal is too narrow for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["FirstThatFits", "key_column", "natural_width", "notes", "table_style", "with_notes"]

_UNBOUNDED = 10_000


def key_column(table: Table, header: str, **options: Any) -> None:
    """Add a column whose cells are never wrapped at a word nor cut with an ellipsis.

    Args:
        table: The table to add the column to.
        header: The column's header.
        **options: Further :meth:`rich.table.Table.add_column` options (``justify``, ``style``...).

    Examples:
        >>> table = Table()
        >>> key_column(table, "class")
        >>> table.columns[0].no_wrap, table.columns[0].overflow
        (True, 'fold')
    """
    table.add_column(header, no_wrap=True, overflow="fold", **options)


def table_style(*, narrow: bool) -> dict[str, Any]:
    """:class:`rich.table.Table` options of a full layout (lines around each cell) or a compact one.

    The compact one has a rule under the header and no vertical lines, nor edges: it spends one column
    between two cells where the full one spends three.

    Examples:
        >>> table_style(narrow=True)["show_edge"]
        False
    """
    if narrow:
        return {"box": box.SIMPLE_HEAD, "show_edge": False}
    return {"box": box.HEAVY_HEAD}


def natural_width(console: Console, renderable: RenderableType, options: ConsoleOptions | None = None) -> int:
    """The width a renderable takes when nothing constrains it (a table: no cell wrapped or cut).

    Examples:
        >>> table = Table("step", box=None, pad_edge=False)
        >>> table.add_row(Text("reasoning[investigate-1]"))
        >>> natural_width(Console(width=40), table)
        24
    """
    options = (options or console.options).update_width(_UNBOUNDED)
    return Measurement.get(console, options, renderable).maximum


class FirstThatFits:
    """Renders the first of several layouts that fits the width it is given; the last one when none does.

    Layouts go from the most to the least complete, e.g. a table with every column, then the same table without its
    low-value columns. Each is measured at its natural width (:func:`natural_width`).

    Examples:
        >>> wide, narrow = Text("a wide layout, with every detail"), Text("narrow")
        >>> console = Console(width=20)
        >>> with console.capture() as captured:
        ...     console.print(FirstThatFits(wide, narrow))
        >>> captured.get().strip()
        'narrow'
    """

    def __init__(self, *layouts: RenderableType) -> None:
        if not layouts:
            raise ValueError("FirstThatFits needs at least one layout")
        self.layouts: tuple[RenderableType, ...] = layouts

    def chosen(self, console: Console, options: ConsoleOptions) -> RenderableType:
        """The layout shown at ``options.max_width``."""
        for layout in self.layouts[:-1]:
            if natural_width(console, layout, options) <= options.max_width:
                return layout
        return self.layouts[-1]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Yield the chosen layout."""
        yield self.chosen(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """The chosen layout's measurement."""
        return Measurement.get(console, options, self.chosen(console, options))


def notes(items: Sequence[tuple[str, str]]) -> Table:
    """A numbered list of long texts, each under its label: ``1. investigate-2: RateLimitError: ...``.

    The numbers match a table's ``#`` column; continuation lines are indented under the text.

    Args:
        items: ``(label, text)`` pairs, numbered from 1 in this order; a blank label shows the text alone.

    Examples:
        >>> console = Console(width=40)
        >>> with console.capture() as captured:
        ...     console.print(notes([("plan", "AuthenticationError: the key was revoked by an administrator")]))
        >>> for line in captured.get().splitlines():
        ...     print(line.rstrip())
        1. plan: AuthenticationError: the key
           was revoked by an administrator
    """
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(overflow="fold")
    for number, (label, text) in enumerate(items, 1):
        line = Text()
        if label:
            line.append(f"{label}: ", style="bold")
        line.append(" ".join(text.split()))
        grid.add_row(f"{number}.", line)
    return grid


def with_notes(table: RenderableType, items: Sequence[tuple[str, str]]) -> RenderableType:
    """The table, then its numbered notes (when there are any)."""
    return Group(table, notes(items)) if items else table
