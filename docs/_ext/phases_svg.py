"""Draw the phases of a bound as an SVG: ``docs/img/phases.svg``, shown on the concepts page.

The diagram is committed as a file so that the site needs no diagram library
and no network: the page shows an image. Rerun this script after changing a
phase or a transition; a test checks that the committed SVG is its output::

    python docs/_ext/phases_svg.py              # writes docs/img/phases.svg
    python docs/_ext/phases_svg.py OTHER.svg

Plain Python, no dependency: boxes for the phases, arrows with labels for the
transitions, loops for the transitions that stay in a phase. Every colour sits
on a fill of its own (white on indigo boxes, dark indigo on pale labels) and
the arrows are a mid indigo, so the picture reads on the light and on the dark
theme alike; the background is transparent.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape

OUT = Path(__file__).resolve().parents[1] / "img" / "phases.svg"

# The states, left to right, and the transitions between them:
# (from, to, label, how the arrow runs). "next": straight to the next box; "over"
# and "under": an arc above or below the boxes between; "loop": back to itself.
PHASES = ("DISCOVERY", "HOLD", "SQUEEZE", "CONVERGED")
TRANSITIONS = (
    ("DISCOVERY", "DISCOVERY", "discovery extended", "loop"),
    ("DISCOVERY", "HOLD", "discovered", "next"),
    ("DISCOVERY", "SQUEEZE", "discovered, no hold", "over"),
    ("DISCOVERY", "CONVERGED", "early convergence", "under"),
    ("HOLD", "SQUEEZE", "hold over", "next"),
    ("HOLD", "CONVERGED", "hold over, no schedule", "under"),
    ("SQUEEZE", "SQUEEZE", "squeezed, backed off, waiting", "loop"),
    ("SQUEEZE", "CONVERGED", "target reached", "next"),
)
# What the picture says, in words: the SVG's description and the page's alt text.
DESCRIPTION = (
    "The phases of a bound, in order: DISCOVERY, HOLD, SQUEEZE, CONVERGED. "
    "DISCOVERY stays in DISCOVERY while discovery is extended; once the bound is "
    "discovered it goes to HOLD, or to SQUEEZE when there is no hold, or straight to "
    "CONVERGED on early convergence. HOLD goes to SQUEEZE when the hold is over, or to "
    "CONVERGED when it is over and there is no schedule. SQUEEZE stays in SQUEEZE while "
    "it squeezes, backs off or waits, and goes to CONVERGED when the target is reached. "
    "CONVERGED is final."
)

# Geometry (user units, the SVG's pixels at its natural size).
BOX_W, BOX_H, GAP = 108, 40, 92
LEFT = 42  # the first box's left edge: the start marker sits before it
TOP = 92  # the boxes' top edge: the loops and the arc above them sit over it
WIDTH, HEIGHT = LEFT + 4 * BOX_W + 3 * GAP + 52, 238
LABEL_SIZE, STATE_SIZE = 13, 14
# A generous width per character, so that a label fits its pill in the wider fonts;
# the padding either side of a label, and the height of its lines.
CHAR_W, PAD, LINE = 0.58 * LABEL_SIZE, 6, LABEL_SIZE + 3

# Colours: indigo as the theme's, each readable on light and dark pages.
BOX_FILL, BOX_TEXT = "#3f51b5", "#ffffff"
EDGE = "#7986cb"
PILL_FILL, PILL_TEXT = "#e8eaf6", "#1a237e"
SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"


def _n(value: float) -> str:
    """A coordinate as written: at most one decimal, no trailing zeros."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _left(phase: str) -> float:
    return LEFT + PHASES.index(phase) * (BOX_W + GAP)


def _centre(phase: str) -> float:
    return _left(phase) + BOX_W / 2


def _path(d: str) -> str:
    return f'<path d="{d}" fill="none" stroke="{EDGE}" stroke-width="1.6" marker-end="url(#head)"/>'


def _curve(x0: float, y0: float, x3: float, y3: float, dy: float) -> str:
    """A cubic from (x0, y0) to (x3, y3), leaving and arriving vertically, bulging by dy."""
    return f"M{_n(x0)},{_n(y0)} C{_n(x0)},{_n(y0 + dy)} {_n(x3)},{_n(y3 + dy)} {_n(x3)},{_n(y3)}"


def _lines(text: str, width: float) -> list[str]:
    """``text`` broken at blanks into lines of at most ``width`` (one word may be longer)."""
    lines: list[str] = []
    for word in text.split():
        if lines and (len(lines[-1]) + 1 + len(word)) * CHAR_W <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _label(text: str, x: float, y: float, *, width: float = WIDTH, align: str = "middle") -> str:
    """A label on a pale pill at (x, y), at most ``width`` wide: it covers the arrow it names.

    ``align`` "middle" centres the pill on x, "start" starts it there; either way it
    stays inside the picture.
    """
    lines = _lines(text, width - 2 * PAD)
    w = max(len(line) for line in lines) * CHAR_W + 2 * PAD
    h = len(lines) * LINE + 6
    left = x - w / 2 if align == "middle" else x
    left = min(max(left, 2), WIDTH - 2 - w)
    top = y - h / 2
    centre = left + w / 2
    spans = "".join(
        f'<tspan x="{_n(centre)}" y="{_n(top + 3 + LINE * (i + 0.5))}">{escape(line)}</tspan>'
        for i, line in enumerate(lines)
    )
    return (
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(w)}" height="{_n(h)}" rx="4" '
        f'fill="{PILL_FILL}"/>'
        f'<text fill="{PILL_TEXT}" font-family="{SANS}" font-size="{LABEL_SIZE}" '
        f'text-anchor="middle" dominant-baseline="central">{spans}</text>'
    )


def _box(phase: str) -> str:
    x, mid = _left(phase), TOP + BOX_H / 2
    return (
        f'<rect x="{_n(x)}" y="{TOP}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{BOX_FILL}"/>'
        f'<text x="{_n(x + BOX_W / 2)}" y="{_n(mid)}" fill="{BOX_TEXT}" font-family="{MONO}" '
        f'font-size="{STATE_SIZE}" font-weight="bold" text-anchor="middle" '
        f'dominant-baseline="central">{phase}</text>'
    )


def _edge(source: str, target: str, label: str, how: str) -> tuple[str, str]:
    """The arrow and its label, drawn apart: every label goes over every arrow."""
    mid, bottom = TOP + BOX_H / 2, TOP + BOX_H
    if how == "next":
        x0, x3 = _left(source) + BOX_W, _left(target)
        # Above the arrow, within the gap (broken into lines where it is wider).
        lines = len(_lines(label, GAP - 8 - 2 * PAD))
        y = mid - 4 - (lines * LINE + 6) / 2
        return _path(f"M{_n(x0)},{_n(mid)} H{_n(x3 - 1)}"), _label(
            label, (x0 + x3) / 2, y, width=GAP - 8
        )
    if how == "loop":
        # On the left of the box's top for the first phase (the arc above leaves
        # from its right), on the right for the others (the arc arrives on the left).
        first = source == PHASES[0]
        x = _left(source) + (34 if first else BOX_W - 38)
        d = (
            f"M{_n(x - 14)},{TOP} C{_n(x - 46)},{TOP - 58} "
            f"{_n(x + 46)},{TOP - 58} {_n(x + 15)},{_n(TOP - 1)}"
        )
        # Over the loop; a later phase's label runs right, away from the arc above,
        # over the empty space above the next box.
        if first:
            return _path(d), _label(label, x, TOP - 58)
        return _path(d), _label(label, x - 24, TOP - 58, align="start")
    if how == "over":
        x0, x3, dy = _left(source) + BOX_W - 16, _left(target) + 16, -80
        y = TOP + 0.75 * dy
        return _path(_curve(x0, TOP, x3, TOP - 1, dy)), _label(label, (x0 + x3) / 2, y)
    if how == "under":
        # The arcs from the first phase reach further down than the others, around them.
        deep = source == PHASES[0]
        x0 = _centre(source) if deep else _left(source) + BOX_W - 16
        x3 = _centre(target) + 14 if deep else _left(target) + 16
        dy = 116 if deep else 60
        y = bottom + 0.75 * dy
        return _path(_curve(x0, bottom, x3, bottom + 1, dy)), _label(label, (x0 + x3) / 2, y)
    raise ValueError(f"unknown arrow {how!r}")


def render() -> str:
    """The SVG, as text: the same bytes every run."""
    mid = TOP + BOX_H / 2
    start_x, end_x = LEFT - 28, _left(PHASES[-1]) + BOX_W + 30
    arrows, labels = zip(*(_edge(*transition) for transition in TRANSITIONS), strict=True)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="title desc">',
        '<title id="title">The phases of a bound</title>',
        f'<desc id="desc">{escape(DESCRIPTION)}</desc>',
        "<defs>",
        '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{EDGE}"/></marker>',
        "</defs>",
        # The start: a dot with an arrow into the first phase.
        f'<circle cx="{_n(start_x)}" cy="{_n(mid)}" r="7" fill="{EDGE}"/>',
        _path(f"M{_n(start_x + 7)},{_n(mid)} H{_n(LEFT - 1)}"),
        *arrows,
        # The end: a ringed dot after the last phase.
        _path(f"M{_n(end_x - 30)},{_n(mid)} H{_n(end_x - 11)}"),
        f'<circle cx="{_n(end_x)}" cy="{_n(mid)}" r="9" fill="none" stroke="{EDGE}" '
        'stroke-width="2"/>',
        f'<circle cx="{_n(end_x)}" cy="{_n(mid)}" r="5" fill="{EDGE}"/>',
        *(_box(phase) for phase in PHASES),
        *labels,
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8", newline="\n")
    print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
