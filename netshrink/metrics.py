"""How a held-out score reads: its usual printed form, which way is better, and how a change is told.

Accuracy ("top1", a fraction) and Spearman correlation are better when higher; perplexity (language
models: exp of the mean next-token negative log-likelihood) is better when lower, and its changes
are relative ("+4.1 %"): a perplexity of 20 rising by 2 and one of 200 rising by 20 are the same
loss. Everything that prints, compares or plots scores asks here instead of assuming accuracy.
No torch import: the report and the CLI use this before any model is loaded.
"""

from __future__ import annotations

ACCURACY = "top1"
PERPLEXITY = "perplexity"
#: Metrics whose lower values are better.
LOWER_IS_BETTER = frozenset({PERPLEXITY})


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def show_value(metric: str, value: float) -> str:
    """Accuracy as a percentage ("91.23%"), perplexity with two decimals, a correlation with four."""
    if metric == ACCURACY:
        return f"{value:.2%}"
    if metric == PERPLEXITY:
        return f"{value:.2f}"
    return f"{value:.4f}"


def show_change(metric: str, after: float, before: float) -> str:
    """The change from `before` to `after`: percentage points for accuracy, a relative change for
    perplexity ("+4.1 %"), a plain difference for correlations."""
    if metric == ACCURACY:
        return f"{100 * (after - before):+.2f} pp"
    if metric == PERPLEXITY:
        return f"{100 * (after / before - 1):+.1f} %" if before > 0 else "n/a"
    return f"{after - before:+.4f}"
