"""Draw the bench's measured ratios as a small SVG chart, from the rows ``python -m bench --json`` wrote.

``python -m bench.chart RESULTS.json --out docs/assets/bench.svg [--caption TEXT]``

``python -m bench.chart --matrix fault-matrix.json --soak soak.json [--soak ...] --out docs/assets/reliability.svg``
draws the reliability suite's figures the same way (the JSON ``ARCANOS_MATRIX_JSON`` and ``ARCANOS_SOAK_JSON`` make
``tests/reliability`` write): incidents delivered per failed step, duplicates and lost steps.

Each row that carries figures (``values`` and a ``baseline``, measured in the same run) becomes one group of
horizontal bars: the baseline first (1.00x), then each figure with its value, unit and ratio to the baseline. Rows
without figures (a missing feature, a bench error) are left out. The SVG is plain text with no timestamp or random
id, so a re-run with the same figures writes the same file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

WIDTH = 760
LABEL_WIDTH = 250
BAR_HEIGHT = 16
BAR_GAP = 5
GROUP_GAP = 18
TITLE_HEIGHT = 20
BASELINE_COLOR = "#9e9e9e"
COLORS = ("#3f51b5", "#ff9800", "#009688", "#e91e63")
"""Bar colours in the order a row lists its figures (the library's own figure first)."""


def chartable(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows that carry figures to draw: a positive baseline and at least one value."""
    return [
        row
        for row in rows
        if row.get("values") and row.get("baseline") and float(row["baseline"][1]) > 0 and row.get("unit") is not None
    ]


def _wrapped(caption: str, width: int = 125) -> list[str]:
    """The caption in lines of at most ``width`` characters, broken at its `` · `` separators where possible."""
    lines: list[str] = []
    for part in caption.split(" · ") if caption else []:
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return lines


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def render(rows: Sequence[Mapping[str, Any]], caption: str = "") -> str:
    """The SVG of the rows' figures, each group scaled to its own largest ratio (the 1.00x line is dashed).

    Args:
        rows: Rows as ``python -m bench --json`` writes them (``scenario``, ``values``, ``baseline``, ``unit``).
        caption: A line under the chart (the command and machine that measured it).

    Returns:
        The SVG document.

    Raises:
        ValueError: No row carries figures to draw.

    Examples:
        >>> row = {"scenario": "client overhead", "values": {"ours": 4.1}, "baseline": ["raw SDK", 4.2],
        ...        "unit": "ms/call"}
        >>> svg = render([row], caption="python -m bench --only overhead")
        >>> svg.startswith("<svg") and "0.98x" in svg and "raw SDK" in svg
        True
    """
    groups = chartable(rows)
    if not groups:
        raise ValueError("no row carries figures to draw (values and a baseline); was the bench run with --json?")
    plot_width = WIDTH - LABEL_WIDTH - 130
    parts: list[str] = []
    y = 10
    for row in groups:
        base_label, base_value = str(row["baseline"][0]), float(row["baseline"][1])
        bars = [(base_label, base_value, BASELINE_COLOR)] + [
            (str(label), float(value), COLORS[number % len(COLORS)])
            for number, (label, value) in enumerate(row["values"].items())
        ]
        scale = max(value / base_value for _, value, _ in bars) * 1.05
        parts.append(f'<text x="10" y="{y + 14}" class="title">{escape(str(row["scenario"]))}</text>')
        y += TITLE_HEIGHT
        top = y
        for label, value, color in bars:
            ratio = value / base_value
            length = max(1.0, plot_width * ratio / scale)
            parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 12}" class="label">{escape(label)}</text>')
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" fill="{color}"/>')
            parts.append(
                f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 12}" class="value">'
                f"{_number(value)} {escape(str(row['unit']))} ({ratio:.2f}x)</text>"
            )
            y += BAR_HEIGHT + BAR_GAP
        one = LABEL_WIDTH + plot_width / scale
        parts.append(f'<line x1="{one:.1f}" y1="{top - 3}" x2="{one:.1f}" y2="{y - BAR_GAP + 3}" class="one"/>')
        y += GROUP_GAP
    for line in _wrapped(caption):
        parts.append(f'<text x="10" y="{y + 4}" class="caption">{escape(line)}</text>')
        y += 15
    style = (
        "text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:12px;fill:#333}"
        ".title{font-weight:600;font-size:13px}.label{text-anchor:end}.caption{fill:#666;font-size:11px}"
        ".one{stroke:#333;stroke-dasharray:3 3;stroke-width:1}"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}" viewBox="0 0 {WIDTH} {y}" '
        f'role="img" aria-label="Measured ratios against the baselines of the same run">\n'
        f'<rect width="100%" height="100%" fill="#fff"/>\n<style>{style}</style>\n' + "\n".join(parts) + "\n</svg>\n"
    )


def soak_row(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The chart row of one soak run (``tests/reliability/test_soak.py`` with ``ARCANOS_SOAK_JSON``).

    Examples:
        >>> soak_row({"steps": 120, "faulty_steps": 6, "failed_steps": 5, "incidents": 5, "duplicate_incidents": 0,
        ...           "lost_steps": 0, "recovered_by_retry": 1})["values"]["incidents delivered"]
        5
    """
    return {
        "scenario": f"soak: {figures['steps']} steps, {figures['faulty_steps']} with seeded faults",
        "values": {
            "incidents delivered": figures["incidents"],
            "duplicate incidents": figures["duplicate_incidents"],
            "lost steps": figures["lost_steps"],
            "recovered by a retry": figures["recovered_by_retry"],
        },
        "baseline": ["steps that failed", figures["failed_steps"]],
        "unit": "",
    }


def matrix_row(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The chart row of the fault matrix (``tests/reliability/test_fault_matrix.py`` with ``ARCANOS_MATRIX_JSON``).

    Examples:
        >>> cells = [{"error": "openai.AuthenticationError", "incidents": 1}, {"error": None, "incidents": 0}]
        >>> matrix_row({"cells": 2, "results": cells})["baseline"]
        ['cells that fail', 1]
    """
    failing = [cell for cell in payload["results"] if cell.get("error")]
    recovered = [cell for cell in payload["results"] if not cell.get("error")]
    return {
        "scenario": (
            f"fault matrix: {payload['cells']} cells ({len({cell.get('kind') for cell in payload['results']})} failure "
            "kinds x client, task, research step)"
        ),
        "values": {
            "incidents delivered": sum(cell["incidents"] for cell in failing),
            "cells with 2+ incidents": sum(cell["incidents"] > 1 for cell in payload["results"]),
            "incidents of recovered cells": sum(cell["incidents"] for cell in recovered),
        },
        "baseline": ["cells that fail", len(failing)],
        "unit": "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chart", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="?", help="the rows, as `python -m bench --json FILE` wrote them")
    parser.add_argument("--matrix", type=Path, help="the fault matrix's JSON (ARCANOS_MATRIX_JSON)")
    parser.add_argument("--soak", type=Path, action="append", default=[], help="a soak run's JSON (ARCANOS_SOAK_JSON)")
    parser.add_argument("--out", type=Path, required=True, help="the SVG to write")
    parser.add_argument("--caption", default="", help="a line under the chart: the command and machine")
    args = parser.parse_args(argv)
    rows = json.loads(args.results.read_text()) if args.results else []
    if args.matrix:
        rows.append(matrix_row(json.loads(args.matrix.read_text())))
    rows += [soak_row(json.loads(path.read_text())) for path in args.soak]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(rows, args.caption))
    print(f"wrote {args.out} ({len(chartable(rows))} groups)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
