"""One style for every figure: the methods' display names, a fixed colour and marker per method,
the parameters' symbols, and the checks that text neither overlaps nor leaves the canvas.

A method keeps its colour and marker in every figure (its place in :data:`METHODS`; a plugin's
method takes the next free ones by name), so fine-tuning is the same grey in Figure 2, Figure 3's
legend and the sweep figure.
"""

from __future__ import annotations

import zlib

from .report import format_value

# the methods in the order of the paper's tables, each with its display name
METHODS = {
    "finetune": "FT", "lp_ft": "LP-FT", "l2sp": "L2-SP", "delta": "DELTA", "bss": "BSS", "co_tuning": "Co-Tuning",
    "core_tuning": "Core-tuning", "uot": "UOT", "dr_tune": "DR-Tune", "daft": "DAFT", "fnp": "FNP",
    "randreg_uniform": "RandReg-U(0, 1)", "randreg_normal": "RandReg-N(0, 1)", "randreg_global": "RandReg-N(μ_s, σ_s²)",
    "randreg_cp": "RandReg-CP", "adarand_no_intra": "AdaRand w/o ℓ_intra", "adarand_no_inter": "AdaRand w/o ℓ_inter",
    "adarand": "AdaRand",
}
# the parameters' symbols (a key not listed keeps its name without the ``method.`` prefix)
SYMBOLS = {"method.lambda": "λ", "method.alpha": "α", "method.prior_lr": "ξ", "method.eta": "η", "method.tau": "τ",
           "method.k": "k", "optim.lr": "lr", "optim.weight_decay": "weight decay"}
# colour-blind-safe colours (Okabe-Ito, then Tableau's), fine-tuning grey, AdaRand vermilion
PALETTE = ["#7f7f7f", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#cc79a7", "#e69f00", "#8c564b", "#9467bd",
           "#17becf", "#bcbd22", "#1f77b4", "#2ca02c", "#ff7f0e", "#98df8a", "#c5b0d5", "#f7b6d2", "#d55e00"]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "<", ">", "p", "h", "*", "d", "H", "8", "1", "2", "o"]


def display_name(method: str) -> str:
    return METHODS.get(method, method)


def symbol(key: str) -> str:
    return SYMBOLS.get(key, key.removeprefix("method."))


def style_index(method: str) -> int:
    if method in METHODS:
        return list(METHODS).index(method)
    return len(METHODS) + zlib.crc32(method.encode()) % len(PALETTE)  # a plugin's: stable across figures


def colour(method: str) -> str:
    return PALETTE[style_index(method) % len(PALETTE)]


def marker(method: str) -> str:
    return MARKERS[style_index(method) % len(MARKERS)]


def row_label(method: str, varied: dict, experiment: dict) -> str:
    """A row's name in a figure: its method's display name, and the keys in which it differs from
    the other rows of its method with their symbols (``AdaRand (λ=0.1)``)."""
    keys = [k for k in varied if k in experiment and k != "method.name"]
    shown = ", ".join(f"{symbol(k)}={format_value(experiment[k])}" for k in keys)
    return f"{display_name(method)} ({shown})" if shown else display_name(method)


def text_problems(fig) -> list[str]:
    """Every pair of visible texts of ``fig`` whose boxes overlap, and every text that leaves the
    canvas, drawn with the Agg renderer: empty when the figure is clean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    page = fig.bbox
    hidden = unseen_tick_labels(fig)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden
             and t.get_figure() is not None]
    boxes = [(t, t.get_window_extent(renderer)) for t in texts]
    problems = [f"{t.get_text()!r} leaves the canvas" for t, b in boxes
                if b.x0 < page.x0 - 0.5 or b.y0 < page.y0 - 0.5 or b.x1 > page.x1 + 0.5 or b.y1 > page.y1 + 0.5]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            if box_a.overlaps(box_b) and overlap_area(box_a, box_b) > 1.0:
                problems.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return problems


def unseen_tick_labels(fig) -> set[int]:
    """The tick labels matplotlib keeps but does not draw: their ticks lie outside the axis's view."""
    hidden = set()
    for ax in fig.axes:
        if not ax.get_visible():
            hidden.update(id(t) for t in ax.findobj(lambda a: True))
            continue
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = (hi - lo) * 1e-9
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - span <= tick.get_loc() <= hi + span:
                    hidden.update((id(tick.label1), id(tick.label2)))
    return hidden


def overlap_area(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)
