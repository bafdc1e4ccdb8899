"""Fitting the whole-network latency model ``a·Σ t + Σ_f w_f·Σ φ_f + c`` on measured nets.

Why this shape: the search needs a prediction that is a weighted sum of per-part terms (its
expected latency is differentiable in the choice probabilities only then), so every correction
is a per-part feature summed over the net (:mod:`prunet.latency.features`). Which features help
depends on the machine and the space, so nested candidate models are compared by leave-one-out
cross-validation on the calibration nets alone — the nets a validation measures never enter the
fit or the choice. Residuals are weighted by ``1/measured`` because the goal is a relative error
(±10 %, MAPE): a 0.1 ms miss matters more on a 1 ms net than on a 10 ms one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .features import CANDIDATE_MODELS

# A richer model must beat a simpler one's cross-validated MAPE by this much (absolute) to be
# chosen: smaller gains are within what re-measuring the same nets moves.
MIN_GAIN = 0.001


@dataclass
class Fit:
    model: str
    a: float
    c: float
    weights: dict[str, float] = field(default_factory=dict)
    cv_mape: dict[str, float] = field(default_factory=dict)  # every candidate tried → its LOO MAPE


def _design(sums: np.ndarray, totals: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    return np.column_stack([sums, np.ones_like(sums), *[totals[n] for n in names]])


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative residuals: rows divided by the measured latency."""
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return coef


def _loo_mape(x: np.ndarray, y: np.ndarray) -> float:
    errs = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = _solve(x[keep], y[keep])
        errs.append(abs(float(x[i] @ coef) - y[i]) / y[i])
    return float(np.mean(errs))


def fit_candidate(name: str, sums: list[float], totals: dict[str, list[float]], measured: list[float]) -> Fit:
    """One candidate model fitted on all the nets given, with no fallback (for error studies)."""
    feats = CANDIDATE_MODELS[name]
    y = np.asarray(measured, float)
    x = _design(np.asarray(sums, float), {k: np.asarray(v, float) for k, v in totals.items()}, feats)
    coef = _solve(x, y)
    return Fit(name, float(coef[0]), float(coef[1]), {f: float(w) for f, w in zip(feats, coef[2:])})


def fit_model(sums: list[float], totals: dict[str, list[float]], measured: list[float],
              acceptable: Callable[[Fit], bool], affine: Callable[[], tuple[float, float]]) -> Fit:
    """Choose and fit the model for one table.

    ``sums``: plain sums of the table entries per calibration net; ``totals``: per feature, its
    sum over each net's parts; ``acceptable``: whether a fit keeps every prediction positive
    (checked by the table, which knows its entries); ``affine``: the fallback ``(a, c)`` fit.
    A candidate needs at least three nets more than it has coefficients for its cross-validation
    to mean anything; with fewer nets only the affine model is fitted."""
    y = np.asarray(measured, float)
    s = np.asarray(sums, float)
    cols = {k: np.asarray(v, float) for k, v in totals.items()}
    a0, c0 = affine()
    best = Fit("affine", a0, c0)
    best_cv = float("inf")
    cv: dict[str, float] = {}
    for name, feats in CANDIDATE_MODELS.items():
        x = _design(s, cols, feats)
        if len(y) < x.shape[1] + 3 or np.linalg.matrix_rank(x) < x.shape[1]:
            continue
        score = _loo_mape(x, y)
        cv[name] = score
        coef = _solve(x, y)
        fit = Fit(name, float(coef[0]), float(coef[1]), {f: float(w) for f, w in zip(feats, coef[2:])})
        ok = fit.a > 0 and bool(np.isfinite([fit.a, fit.c, *fit.weights.values()]).all()) and acceptable(fit)
        if not ok and name == "affine":
            fit, ok = best, True  # the fallback (a pure scale when the line tilts below zero)
        if not ok:
            continue
        if score < best_cv - (MIN_GAIN if best_cv < float("inf") else 0.0):
            best, best_cv = fit, score
    best.cv_mape = cv
    return best
