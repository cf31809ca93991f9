"""One look for every figure: a fixed colour per optimizer, a fixed line style and marker per tuning
scheme, display names, and matplotlib settings sized for a paper's column.

The mapping is a table, not an order of appearance, so ZO-SGD is the same blue in every figure of
every run folder. It covers every ``conf/optimizer/*.yaml`` and ``conf/tuning/*.yaml`` name (a test
checks that); a name it does not know gets a colour / style picked by a CRC-32 of the name, which is
the same in every process and on every machine (Python's ``hash`` of a str is salted per process).
"""
from __future__ import annotations

import zlib

# Column widths of two-column papers (ACL, NeurIPS/ICML single column is ~5.5 in): figures are drawn at
# their printed size so that a 7 pt font is 7 pt on the page.
COLUMN_IN = 3.3
TEXT_IN = 6.9
FONT_PT = 7
DPI = 300

# Colour-blind-safe where it matters most (Okabe & Ito 2008 first, then Tableau's tab20 shades):
# optimizer families read as hues: first-order in black/greys, ZO-SGD and its variants in blues and
# greens, ZO-Adam / HiZOO (second moments) in oranges and reds, low-rank and sparse methods in purples.
OPTIMIZER_COLORS = {
    "fo_sgd": "#7f7f7f",
    "fo_adam": "#000000",
    "forward_grad": "#8c564b",
    "hybrid_zo_fo": "#c49c94",
    "zo_sgd": "#0072B2",
    "zo_sgd_mmt": "#56B4E9",
    "zo_sgd_cons": "#009E73",
    "zo_sgd_sign": "#98df8a",
    "zo_sgd_block": "#17becf",
    "zo_sgd_block_baseline": "#9edae5",
    "zo_sgd_sparse": "#bcbd22",
    "zo_adam": "#E69F00",
    "hizoo": "#D55E00",
    "bszo": "#CC79A7",
    "lozo": "#9467bd",
    "lozo_m": "#c5b0d5",
    "sparse_mezo": "#dbdb8d",
    "mezo_svrg": "#d62728",
    "fzoo": "#ff9896",
    # no optimizer trains (zero-shot, ICL): the untuned model
    "none": "#b0b0b0",
}
OPTIMIZER_NAMES = {
    "fo_sgd": "FO-SGD", "fo_adam": "FO-Adam", "forward_grad": "Forward-Grad", "hybrid_zo_fo": "Hybrid ZO-FO",
    "zo_sgd": "ZO-SGD", "zo_sgd_mmt": "ZO-SGD-MMT", "zo_sgd_cons": "ZO-SGD-Cons", "zo_sgd_sign": "ZO-SGD-Sign",
    "zo_sgd_block": "ZO-SGD-Block", "zo_sgd_block_baseline": "ZO-SGD-Block (baseline)",
    "zo_sgd_sparse": "ZO-SGD-Sparse", "zo_adam": "ZO-Adam", "hizoo": "HiZOO", "bszo": "BSZO", "lozo": "LOZO",
    "lozo_m": "LOZO-M", "sparse_mezo": "Sparse-MeZO", "mezo_svrg": "MeZO-SVRG", "fzoo": "FZOO", "none": "untuned",
}

# Line style (curves) and marker (points) per tuning scheme.
TUNING_LINESTYLES = {"full": "-", "lora": "--", "prefix": ":", "prompt": "-.", "icl": (0, (5, 1, 1, 1, 1, 1))}
TUNING_MARKERS = {"full": "o", "lora": "s", "prefix": "^", "prompt": "D", "icl": "v"}
TUNING_NAMES = {"full": "full", "lora": "LoRA", "prefix": "prefix", "prompt": "prompt", "icl": "ICL"}

TASK_NAMES = {"sst2": "SST-2", "copa": "COPA", "winogrande": "WinoGrande", "multirc": "MultiRC",
              "rte": "RTE", "boolq": "BoolQ", "cb": "CB", "wic": "WiC", "wsc": "WSC", "record": "ReCoRD",
              "squad": "SQuAD", "drop": "DROP", "sst5": "SST-5", "snli": "SNLI", "mnli": "MNLI", "trec": "TREC"}
METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "em": "exact match"}

# Fallbacks for names not in the tables above: picked by CRC-32, stable everywhere.
_FALLBACK_COLORS = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#8ca252", "#bd9e39",
                    "#ad494a", "#a55194", "#6b6ecf", "#b5cf6b", "#e7ba52", "#d6616b", "#ce6dbd"]
_FALLBACK_LINESTYLES = [(0, (3, 1)), (0, (1, 2)), (0, (6, 2, 1, 2)), (0, (2, 1, 2, 3)), (0, (8, 2))]
_FALLBACK_MARKERS = ["P", "X", "*", "h", "<", ">", "p"]


def _pick(name: str, options: list):
    return options[zlib.crc32(str(name).encode()) % len(options)]


def _key(name) -> str:
    return "none" if name is None or str(name) in ("", "nan", "None") else str(name)


def optimizer_color(name) -> str:
    return OPTIMIZER_COLORS.get(_key(name)) or _pick(_key(name), _FALLBACK_COLORS)


def tuning_linestyle(name):
    return TUNING_LINESTYLES.get(_key(name)) or _pick(_key(name), _FALLBACK_LINESTYLES)


def tuning_marker(name) -> str:
    return TUNING_MARKERS.get(_key(name)) or _pick(_key(name), _FALLBACK_MARKERS)


def optimizer_name(name) -> str:
    return OPTIMIZER_NAMES.get(_key(name), _key(name))


def tuning_name(name) -> str:
    return TUNING_NAMES.get(_key(name), _key(name))


def task_name(name) -> str:
    return TASK_NAMES.get(str(name), str(name))


def metric_name(name) -> str:
    return METRIC_NAMES.get(str(name), str(name))


def cell_style(tuning, optimizer) -> dict:
    """Keyword arguments for ``plot`` / ``errorbar`` / ``scatter`` of one (tuning, optimizer) cell."""
    return {"color": optimizer_color(optimizer), "linestyle": tuning_linestyle(tuning), "marker": tuning_marker(tuning)}


def cell_label(tuning, optimizer) -> str:
    return f"{optimizer_name(optimizer)} / {tuning_name(tuning)}"


def rc() -> dict:
    """matplotlib rcParams for figures printed at column width (use with ``plt.rc_context``)."""
    return {
        "font.size": FONT_PT, "axes.titlesize": FONT_PT + 1, "axes.labelsize": FONT_PT,
        "xtick.labelsize": FONT_PT, "ytick.labelsize": FONT_PT, "legend.fontsize": FONT_PT,
        "figure.titlesize": FONT_PT + 1, "lines.linewidth": 1.0, "lines.markersize": 3.5,
        "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
        "axes.grid": True, "grid.linewidth": 0.4, "grid.alpha": 0.4,
        "axes.spines.top": False, "axes.spines.right": False,
        "legend.frameon": False, "legend.handlelength": 2.8,
        "savefig.dpi": DPI, "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in the PDF: editable, no Type 3
        "figure.constrained_layout.use": True,
    }
