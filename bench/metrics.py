"""Metrics of M gradient estimates against a reference gradient, with 95% confidence intervals.

Notation: g_1…g_M ∈ R^P the estimates, g* the reference (of the estimator's target), X_m = g_m − g*, X̄ their
mean, S the unbiased sample covariance of the g_m (n = M − 1 degrees of freedom), Σ = Cov(g), β = E g − g*,
∇J the policy gradient at the same θ (g* itself unless the target is another vector).

| metric            | definition                                  | 95% interval                                   |
| variance_trace    | tr S  (unbiased for tr Σ)                   | jackknife, on the log scale                    |
| bias_norm         | √max(0, ‖X̄‖² − tr S / M)                    | normal interval for ‖β‖², square-rooted        |
| relative_bias     | bias_norm / ‖g*‖                            | bias_norm's, over ‖g*‖                         |
| bias_pvalue       | test of H0: β = 0 (below)                   | —                                              |
| cosine_mean       | mean_m cos(g_m, g*)                         | t interval of the mean                         |
| gradient_cosine   | mean_m cos(g_m, ∇J)                         | t interval of the mean                         |
| pairwise_cosine   | mean over pairs m ≠ m' of cos(g_m, g_m')    | jackknife                                      |
| snr               | ‖g*‖² / variance_trace                      | variance_trace's, inverted                     |
| mse               | mean_m ‖g_m − g*‖²  (= ‖X̄‖² + (n/M) tr S)    | t interval of the mean                         |

‖X̄‖² − tr S/M is unbiased for ‖β‖² because E‖X̄‖² = ‖β‖² + tr Σ / M. It is the one-sample
U-statistic U = Σ_{m≠m'} X_m·X_m' / (M(M−1)) with variance 4 βᵀΣβ / M + 2 tr(Σ²) / (M(M−1)).

bias_pvalue: the L²-norm test of Zhang (2005) / Chen & Qin (2010) with an F approximation, valid
whether P < M or P ≫ M. Under H0 the statistic F = M‖X̄‖² / tr S is approximately
F(ν, nν) with ν = (tr Σ)² / tr(Σ²) ∈ [1, P] the effective dimension: M‖X̄‖² ≈ a χ²_ν and
tr S ≈ a ν χ²_{nν} / (nν) (Welch–Satterthwaite, matching two moments). It is exact for P = 1
(F = t²) and for spherical Gaussian Σ. ν is estimated with an unbiased U-statistic estimator of tr(Σ²) that needs no normality (sparse
tabular gradients are far from normal, and the normal-theory estimator makes the test conservative). Calibration (uniform p-values under H0) is checked by tests/test_metrics.py.

Every interval and the p-value rest on normal approximations in M. They hold when the estimates
are not heavy-tailed; `tail_kurtosis` = mean_m d_m² / (mean_m d_m)², d_m = ‖g_m − ḡ‖², says when
they do not (it is NaN for zero spread; that is heavy-tailed only when the sample is also `degenerate`, below:
a deterministic estimator equal to g* has no tails). For Gaussian estimates it is 1 + 2/ν ≤ 3 whatever Σ, so `heavy_tailed` (> 4) marks a
measurement whose CIs are too narrow and whose p-value is miscalibrated at this M: measured, the
95% variance CI of one-sample REINFORCE on the Gaussian bandit (κ̂ ≈ 70) covers 83% at M = 1000,
and the bias test rejects 11–14% at the 5% level there. Raise N or M until the flag clears.

Sampled references. When g* is itself an estimate g̃ = g_true + ε with ε independent of the g_m, unbiased,
per-coordinate variances v_p (D = diag v, estimated with `reference_dof` degrees of freedom each; see
bench/reference.py), E‖X̄‖² gains Σ_p v_p: bias_norm² = ‖X̄‖² − tr S / M − Σ v is unbiased for the bias
against the true target, its interval adds 4 β̂ᵀDβ̂ + 2 Σ v² to the variance, and the test compares
Q = ‖X̄‖² with C = Σ/M + D: Q / (tr S / M + Σ v) ≈ F(ν_C, d) with ν_C = (tr C)² / tr(C²),
tr(C²) = tr(Σ²)/M² + 2 Σ_p Σ_pp v_p / M + Σ v², and d the Welch–Satterthwaite degrees of freedom of the
denominator's two independent parts ((M−1)ν̂ for tr S, K−1 times the effective count (Σv)²/Σv² of the v_p).
With v = 0 all of this is the exact-reference case. `bias_resolution` = √(c·χ²_{ν,0.95} − Σv), c = Σv²/Σv,
ν = (Σv)²/Σv²: the bias norm at which ‖β‖² + Σv reaches the 95% quantile of ‖ε‖² (two-moment χ² fit),
i.e. the smallest bias the reference can tell from its own error however large M is (0 when exact).
cosine_mean, gradient_cosine and pairwise_cosine are not corrected: the noise of g̃ lowers the first two slightly.

gradient_cosine puts every estimator on one scale: the cosine to the policy gradient ∇J whatever the estimator
targets. Where the target is ∇J it is cosine_mean itself (the same number and interval, not recomputed); for the
damped natural gradient (F + δI)⁻¹∇J and the entropy bonus ∇(J + αH) it is computed the same way against the ∇J
reference of the same problem at θ (exact where the problem has it, else its sampled reference), so a natural
gradient's direction can be compared with REINFORCE's. (F + δI)⁻¹ turns ∇J: even the exact natural gradient has
cos((F + δI)⁻¹∇J, ∇J) < 1 unless ∇J is an eigenvector of F.

A cosine with a zero vector is defined as 0 (the estimate carries no direction). Estimates with a
non-finite coordinate are excluded from every metric and counted in `nonfinite`.

When not to trust a measurement at all (`trustworthy`, `untrustworthy_reasons`). Three flags, each
a measurement whose numbers describe the computed values but not the estimator:
- `heavy_tailed` (above): the CIs are too narrow and the p-value optimistic.
- `excess_nonfinite`: `nonfinite_fraction` = nonfinite / M > NONFINITE_LIMIT (5%). The metrics are
  those of the finite remainder, a truncated sample: where weights overflow it is the part with the
  small weights, so its variance understates the estimator's by an unknown factor. Values and CIs
  are kept (they are exact statements about the remainder); the flag says not to read them as the
  estimator's. 5% is a stated convention, not a test: a few overflowing batches are reported (and
  counted) without discarding the measurement; beyond that the excluded part, whose size is unknown, is
  too large a share to call the remainder the estimator's distribution.
- `degenerate`: the reference is nonzero and the finite estimates collapsed, either every one of
  them is negligible against it, ‖g_m‖ ≤ COLLAPSE_RATIO·‖g*‖ for all m (importance weights that
  underflowed: estimates exactly 0, or 1e-16 … 1e-37 of ‖g*‖), or all are identical (zero spread)
  and differ from an exact g* (an output that no longer depends on the sample). Such a sample has no spread, or only the
  spread of rounding, so nothing about the estimator's distribution can be inferred from it:
  `bias_pvalue` is NaN (by construction it would be 0, a certain "detection" of a bias that may be
  an artefact of float64, and every CI collapses to a false precision), and every CI is NaN. The
  point values (variance, bias norm, MSE…) are kept: they describe the numbers computed, e.g. a
  relative bias of 1 for all-zero estimates. A deterministic estimator whose output equals g*
  is not degenerate; one that always returns the same wrong vector is (its variance of 0 and its
  bias are exact, but they cannot be told from a collapse; the flag lets a reader judge).
`trustworthy` = none of the three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
_Z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))

HEAVY_TAIL_KURTOSIS = 4.0  # Gaussian estimates give at most 3
NONFINITE_LIMIT = 0.05  # above this non-finite fraction the finite remainder is not the measurement
# "Negligible against the reference": the square root of float64's resolution 2^-52, far below any
# estimate an estimator of this suite legitimately returns (relative bias ≥ 1 − 1.5e-8) and far above
# the 1e-16 … 1e-37 relative sizes of estimates whose importance weights underflowed (measured with
# is-trajectory at N = 8, M = 100, seed 0: garnet at H = 100 and distance:50 gives ~1e-37; lqr at H = 100
# and distance:1 gives at most 2.8e-16, just above 2^-52 itself, which would therefore be too tight).
COLLAPSE_RATIO = 2.0**-26

Interval = tuple[float, float]
_NAN_CI: Interval = (math.nan, math.nan)


@dataclass(frozen=True)
class GradientMetrics:
    reps_used: int
    nonfinite: int
    mean_grad: np.ndarray  # [P]
    reference_norm: float
    variance_trace: float
    variance_trace_ci: Interval
    bias_norm: float
    bias_norm_ci: Interval
    relative_bias: float
    relative_bias_ci: Interval
    bias_pvalue: float
    bias_dof: float  # ν̂, the effective dimension used by the test
    bias_resolution: float  # the smallest ‖bias‖ the reference can tell from its own error (0: exact)
    cosine_mean: float
    cosine_mean_ci: Interval
    gradient_cosine: float  # mean_m cos(g_m, ∇J): cosine_mean itself when the target is ∇J
    gradient_cosine_ci: Interval
    pairwise_cosine: float
    pairwise_cosine_ci: Interval
    snr: float
    snr_ci: Interval
    mse: float
    mse_ci: Interval
    tail_kurtosis: float
    degenerate: bool = False  # the finite estimates collapsed (module docstring): no CI, no p-value

    @property
    def heavy_tailed(self) -> bool:
        """True when the normal approximations behind the CIs and the p-value are not to be trusted: tail kurtosis
        above HEAVY_TAIL_KURTOSIS or undefined, except for zero spread that is not degenerate against a nonzero
        reference (every estimate the same vector, equal to an exact g* ≠ 0 or tested against a sampled g̃: e.g. the
        `exact` estimator). Such a sample has no tails at all; its kurtosis is 0/0, not large. Zero spread at a zero
        reference (a saturated softmax: every estimate and g* exactly 0) stays flagged: it shows nothing of the
        estimator's distribution."""
        if self.variance_trace == 0 and not self.degenerate and self.reference_norm > 0:
            return False
        return not self.tail_kurtosis <= HEAVY_TAIL_KURTOSIS

    @property
    def nonfinite_fraction(self) -> float:
        """nonfinite / M: the share of estimates left out of every metric."""
        total = self.reps_used + self.nonfinite
        return self.nonfinite / total if total else math.nan

    @property
    def excess_nonfinite(self) -> bool:
        """True when more than NONFINITE_LIMIT of the estimates are non-finite."""
        return self.nonfinite_fraction > NONFINITE_LIMIT

    @property
    def untrustworthy_reasons(self) -> list[str]:
        """Why the metrics do not describe the estimator (empty: trustworthy)."""
        return untrustworthy_reasons(self.heavy_tailed, self.nonfinite_fraction, self.degenerate, self.tail_kurtosis)

    @property
    def trustworthy(self) -> bool:
        """Not heavy-tailed, non-finite estimates within NONFINITE_LIMIT, not degenerate."""
        return not self.untrustworthy_reasons


# The metrics that carry a 95% interval (`<name>_ci`), in record order: the one list the harness's JSON, the
# CLI table, the stored rows (`<name>_lo`, `<name>_hi`) and the report read.
METRICS_WITH_CI = tuple(f.name for f in fields(GradientMetrics) if f"{f.name}_ci" in GradientMetrics.__dataclass_fields__)


def untrustworthy_reasons(heavy_tailed: bool, nonfinite_fraction: float, degenerate: bool,
                          tail_kurtosis: float = math.nan) -> list[str]:
    """The reasons not to trust a measurement, one short phrase each, from its three flags (the CLI and
    `Measurement.to_dict` show them; the report, which aggregates repetitions, counts the flags instead:
    flag_counts_text)."""
    reasons = []
    if heavy_tailed:
        kurtosis = f"{tail_kurtosis:.3g}" if math.isfinite(tail_kurtosis) else "undefined"
        reasons.append(f"heavy-tailed (tail kurtosis {kurtosis}, limit {HEAVY_TAIL_KURTOSIS:g})")
    if nonfinite_fraction > NONFINITE_LIMIT:
        reasons.append(f"{nonfinite_fraction:.0%} of the estimates non-finite (limit {NONFINITE_LIMIT:.0%})")
    if degenerate:
        reasons.append("degenerate: the estimates collapsed (all negligible against the reference, or all identical)")
    return reasons


def trust_flags(rows):
    """Stored rows (a pandas DataFrame, one measurement each) → the same rows with boolean `heavy_tailed`,
    `nonfinite_fraction`, `excess_nonfinite`, `degenerate` and `trustworthy`: the stored-row twin of
    GradientMetrics' properties, recomputed from the flags so that results written before these columns
    existed still load. There
    `nonfinite_fraction` = nonfinite / reps (M) (exact: it is the definition), `degenerate` unknown is
    taken as False (so such rows are judged, as before, by `heavy_tailed` and the non-finite count), and
    a column missing altogether counts as no flag."""
    import pandas as pd  # here only: the measurement path (harness, workers) needs no pandas

    derived = (rows["nonfinite"] / rows["reps"] if {"nonfinite", "reps"} <= set(rows.columns)
               else pd.Series(math.nan, index=rows.index))
    fraction = (rows["nonfinite_fraction"].astype(float).fillna(derived) if "nonfinite_fraction" in rows
                else derived).astype(float)

    def flag(column: str) -> pd.Series:
        return (rows[column].astype("boolean").fillna(False).astype(bool) if column in rows
                else pd.Series(False, index=rows.index))

    heavy, excess, degenerate = flag("heavy_tailed"), fraction > NONFINITE_LIMIT, flag("degenerate")
    return rows.assign(heavy_tailed=heavy, nonfinite_fraction=fraction, excess_nonfinite=excess,
                       degenerate=degenerate, trustworthy=~(heavy | excess | degenerate))


def flag_counts_text(heavy_tailed: int, excess_nonfinite: int, degenerate: int, repetitions: int) -> str:
    """Repetitions of one point with each flag, as text: "heavy-tailed 1/3, degenerate 3/3" ("" if none)."""
    labels = (("heavy-tailed", heavy_tailed), (f"non-finite > {NONFINITE_LIMIT:.0%}", excess_nonfinite),
              ("degenerate", degenerate))
    return ", ".join(f"{label} {int(k)}/{int(repetitions)}" for label, k in labels if k)


def collapsed(estimates: np.ndarray, reference: np.ndarray, exact_reference: bool = True) -> bool:
    """The `degenerate` test of the module docstring on finite estimates [M, P] and g* [P]: g* ≠ 0 and
    either every ‖g_m‖ ≤ COLLAPSE_RATIO·‖g*‖, or M ≥ 2 identical rows farther than that from g*. The second
    applies to an exact g* only: identical rows differ from a sampled g̃ by g̃'s own error, which the bias test
    accounts for (testing a zero-spread estimate against g̃ is how the references themselves are tested)."""
    ref_norm = float(np.linalg.norm(reference))
    if estimates.shape[0] == 0 or not ref_norm > 0:
        return False
    floor = COLLAPSE_RATIO * ref_norm
    if float(np.linalg.norm(estimates, axis=1).max()) <= floor:
        return True
    identical = exact_reference and estimates.shape[0] >= 2 and bool((estimates == estimates[0]).all())
    return identical and float(np.linalg.norm(estimates[0] - reference)) > floor


def mean_interval(values: np.ndarray) -> tuple[float, Interval]:
    """Sample mean and its t interval. values [M] → (mean, (lo, hi))."""
    count = values.shape[0]
    mean = float(values.mean())
    if count < 2:
        return mean, _NAN_CI
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, count - 1)) * float(values.std(ddof=1)) / math.sqrt(count)
    return mean, (mean - half, mean + half)


def jackknife_se(leave_one_out: np.ndarray) -> float:
    """Jackknife standard error from the M leave-one-out values of a statistic."""
    count = leave_one_out.shape[0]
    return math.sqrt((count - 1) / count * float(((leave_one_out - leave_one_out.mean()) ** 2).sum()))


def variance_trace_loo(estimates: np.ndarray) -> np.ndarray:
    """tr S with each estimate left out in turn, in O(MP). estimates [M, P] → [M] (needs M ≥ 3)."""
    count = estimates.shape[0]
    total = estimates.sum(0)
    sq_norms = (estimates**2).sum(1)
    rest = total[None, :] - estimates  # [M, P] sums without m
    return ((sq_norms.sum() - sq_norms) - (rest**2).sum(1) / (count - 1)) / (count - 2)


def trace_cov_squared(centered: np.ndarray) -> float:
    """Unbiased U-statistic estimate of tr(Σ²) = ‖Σ‖_F² from M ≥ 4 i.i.d. rows [M, P], with no
    normality assumption (the unbiased HSIC estimator of Song et al. 2012 with both kernels linear).
    With K the Gram matrix of the rows and K̃ its off-diagonal part,

        tr̂(Σ²) = [‖K̃‖_F² + (1ᵀK̃1)² / ((M−1)(M−2)) − 2 ‖K̃1‖² / (M−2)] / (M(M−3)),

    evaluated in O(MP·min(M, P)) through the smaller of the two Gram matrices. The estimate is
    invariant to shifting all rows, so rows centered at their mean are used for accuracy."""
    count = centered.shape[0]
    if count < 4:
        gram = centered @ centered.T
        return float((gram**2).sum()) / (count - 1) ** 2  # plug-in tr(S²)
    small_gram = centered @ centered.T if count <= centered.shape[1] else centered.T @ centered
    sq_norms = (centered**2).sum(1)  # K_ii [M]
    off_fro = float((small_gram**2).sum()) - float((sq_norms**2).sum())  # ‖K̃‖_F²
    total = centered.sum(0)
    off_sum = float(total @ total) - float(sq_norms.sum())  # 1ᵀK̃1
    row_sums = centered @ total - sq_norms  # K̃1 [M]
    value = off_fro + off_sum**2 / ((count - 1) * (count - 2)) - 2 * float(row_sums @ row_sums) / (count - 2)
    return value / (count * (count - 3))


def bias_test(deviations: np.ndarray, tr_s: float, tr_s2_hat: float, diag_s: np.ndarray | None = None,
              reference_variance: np.ndarray | None = None, reference_dof: int = 0) -> tuple[float, float]:
    """p-value of H0: E X = 0 and the effective dimension ν̂ of the estimates. deviations X [M, P]; diag_s [P] the
    diagonal of S; reference_variance v [P] (None or zeros: exact reference) with reference_dof degrees of freedom."""
    count, dim = deviations.shape
    sq_dev = float((deviations.mean(0) ** 2).sum())  # ‖X̄‖²
    nu = (tr_s**2 / tr_s2_hat) if tr_s2_hat > 0 else float(dim)
    nu = min(max(nu, 1.0), float(dim))
    ref_total = 0.0 if reference_variance is None else float(reference_variance.sum())
    noise = tr_s / count + ref_total  # tr Ĉ, the expected ‖X̄‖² under H0
    if noise <= 0:
        return (1.0 if sq_dev == 0 else 0.0), math.nan
    if ref_total == 0:
        return float(stats.f.sf(sq_dev / noise, nu, (count - 1) * nu)), nu
    ref_squares = float((reference_variance**2).sum())
    tr_c2 = max(tr_s2_hat, 0.0) / count**2 + 2 * float(diag_s @ reference_variance) / count + ref_squares
    nu_c = min(max(noise**2 / tr_c2, 1.0), float(dim))
    # Welch–Satterthwaite: tr S / M has (M − 1)ν̂ degrees of freedom, Σv has (K − 1)·(Σv)²/Σv²
    den_dof = noise**2 / ((tr_s / count) ** 2 / ((count - 1) * nu) + ref_squares / max(reference_dof, 1))
    return float(stats.f.sf(sq_dev / noise, nu_c, den_dof)), nu


def bias_resolution(reference_variance: np.ndarray | None, level: float = CONFIDENCE) -> float:
    """√(c·χ²_{ν,level} − Σv) of the module docstring; 0 for an exact reference."""
    if reference_variance is None:
        return 0.0
    total, squares = float(reference_variance.sum()), float((reference_variance**2).sum())
    if total <= 0:
        return 0.0
    scale, dof = squares / total, total**2 / squares
    return math.sqrt(max(scale * float(stats.chi2.ppf(level, dof)) - total, 0.0))


def _cosines_to(estimates: np.ndarray, direction: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(estimates, axis=1) * np.linalg.norm(direction)
    dots = estimates @ direction
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def _unit_rows(estimates: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(estimates, axis=1, keepdims=True)
    return np.divide(estimates, norms, out=np.zeros_like(estimates), where=norms > 0)


def pairwise_cosine(estimates: np.ndarray) -> tuple[float, Interval]:
    """Mean cosine over ordered pairs m ≠ m' (Ilyas et al. 2020) and its jackknife interval."""
    unit = _unit_rows(estimates)
    count = unit.shape[0]
    total = unit.sum(0)
    self_dots = (unit**2).sum(1)
    value = (float(total @ total) - float(self_dots.sum())) / (count * (count - 1))
    if count < 3:
        return value, _NAN_CI
    rest = total[None, :] - unit
    loo = (((rest**2).sum(1)) - (self_dots.sum() - self_dots)) / ((count - 1) * (count - 2))
    half = _Z * jackknife_se(loo)
    return value, (value - half, value + half)


# Metrics use up to fourth powers of the estimates (tr Σ² and the tail kurtosis), which overflow
# float64 beyond ~1e77 and underflow below ~1e-77; outside [2^-SAFE_EXPONENT, 2^SAFE_EXPONENT] they are
# computed on estimates scaled by a power of two (exact) and scaled back.
SAFE_EXPONENT = 200


def gradient_metrics(estimates: np.ndarray, reference: np.ndarray, reference_variance: np.ndarray | None = None,
                     reference_dof: int = 0, gradient: np.ndarray | None = None) -> GradientMetrics:
    """All metrics of the module docstring. estimates [M, P], reference g* [P]; float64. A sampled reference
    comes with its per-coordinate variances v [P] and their degrees of freedom (K − 1). gradient: ∇J [P] when the
    reference is of another target (gradient_cosine is measured against it); None when g* is ∇J."""
    if reference_variance is not None:
        reference_variance = np.asarray(reference_variance, dtype=np.float64)
    estimates = np.asarray(estimates, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if gradient is not None:
        gradient = np.asarray(gradient, dtype=np.float64)
    finite_values = np.concatenate([estimates[np.isfinite(estimates).all(axis=1)].ravel(), reference.ravel()])
    largest = float(np.abs(finite_values).max()) if finite_values.size else 0.0
    exponent = math.frexp(largest)[1] if largest > 0 else 0
    if abs(exponent) <= SAFE_EXPONENT:
        return _gradient_metrics(estimates, reference, reference_variance, reference_dof, gradient)
    scale = math.ldexp(1.0, exponent)
    scaled_variance = None if reference_variance is None else reference_variance / scale / scale  # scale² overflows
    m = _gradient_metrics(estimates / scale, reference / scale, scaled_variance, reference_dof,
                          None if gradient is None else gradient / scale)
    linear, quadratic = (lambda x: x * scale), (lambda x: x * scale * scale)
    return replace(
        m, mean_grad=m.mean_grad * scale, reference_norm=linear(m.reference_norm),
        variance_trace=quadratic(m.variance_trace), variance_trace_ci=tuple(map(quadratic, m.variance_trace_ci)),
        bias_norm=linear(m.bias_norm), bias_norm_ci=tuple(map(linear, m.bias_norm_ci)),
        bias_resolution=linear(m.bias_resolution), mse=quadratic(m.mse), mse_ci=tuple(map(quadratic, m.mse_ci)),
    )


def _gradient_metrics(estimates: np.ndarray, reference: np.ndarray, reference_variance: np.ndarray | None,
                      reference_dof: int, gradient: np.ndarray | None) -> GradientMetrics:
    finite = np.isfinite(estimates).all(axis=1)
    estimates = estimates[finite]
    count, dim = estimates.shape
    ref_sq = float(reference @ reference)
    ref_norm = math.sqrt(ref_sq)
    nan = math.nan
    degenerate = collapsed(estimates, reference, reference_variance is None or not reference_variance.any())
    if count < 2:  # no spread: every metric and interval undefined but the counts, the mean and the reference's
        undefined = {f.name: _NAN_CI if f.name.endswith("_ci") else nan for f in fields(GradientMetrics)}
        return GradientMetrics(**{
            **undefined, "reps_used": count, "nonfinite": int((~finite).sum()),
            "mean_grad": estimates.mean(0) if count else np.full(dim, nan), "reference_norm": ref_norm,
            "bias_resolution": bias_resolution(reference_variance), "degenerate": degenerate})

    mean_grad = estimates.mean(0)
    deviations = estimates - reference  # X [M, P]
    centered = estimates - mean_grad
    tr_s = float((centered**2).sum()) / (count - 1)
    tr_s2_hat = trace_cov_squared(centered)

    if count >= 3 and tr_s > 0:
        log_half = _Z * jackknife_se(variance_trace_loo(estimates)) / tr_s
        var_ci = (tr_s * math.exp(-log_half), tr_s * math.exp(log_half))
    else:
        var_ci = _NAN_CI

    mean_dev = deviations.mean(0)
    ref_var = np.zeros(dim) if reference_variance is None else reference_variance
    bias_sq = float(mean_dev @ mean_dev) - tr_s / count - float(ref_var.sum())  # unbiased for ‖β‖²
    quad = float(((centered @ mean_dev) ** 2).sum()) / (count - 1)  # β̂ᵀ S β̂
    bias_sq_var = (4 * quad / count + 2 * max(tr_s2_hat, 0.0) / (count * (count - 1))
                   + 4 * float(mean_dev**2 @ ref_var) + 2 * float(ref_var @ ref_var))
    bias_sq_sd = math.sqrt(max(bias_sq_var, 0.0))
    bias_norm = math.sqrt(max(bias_sq, 0.0))
    bias_ci = (math.sqrt(max(bias_sq - _Z * bias_sq_sd, 0.0)), math.sqrt(max(bias_sq + _Z * bias_sq_sd, 0.0)))
    diag_s = (centered**2).sum(0) / (count - 1)
    pvalue, dof = bias_test(deviations, tr_s, tr_s2_hat, diag_s, reference_variance, reference_dof)

    if ref_norm > 0:
        relative_bias = bias_norm / ref_norm
        relative_ci = (bias_ci[0] / ref_norm, bias_ci[1] / ref_norm)
    else:
        relative_bias, relative_ci = nan, _NAN_CI

    cos_mean, cos_ci = mean_interval(_cosines_to(estimates, reference))
    grad_cos, grad_cos_ci = ((cos_mean, cos_ci) if gradient is None  # the target is ∇J: the same number
                             else mean_interval(_cosines_to(estimates, gradient)))
    pair_mean, pair_ci = pairwise_cosine(estimates)
    mse, mse_ci = mean_interval((deviations**2).sum(1))

    spread = (centered**2).sum(1)  # d_m [M]
    tail_kurtosis = float((spread**2).mean() / spread.mean() ** 2) if tr_s > 0 else nan

    snr = ref_sq / tr_s if tr_s > 0 else math.inf
    snr_ci = (ref_sq / var_ci[1], ref_sq / var_ci[0]) if not math.isnan(var_ci[0]) else _NAN_CI
    if degenerate:  # no spread to infer from: no interval, no test (module docstring)
        var_ci = bias_ci = relative_ci = cos_ci = grad_cos_ci = pair_ci = snr_ci = mse_ci = _NAN_CI
        pvalue = nan

    return GradientMetrics(
        reps_used=count, nonfinite=int((~finite).sum()), mean_grad=mean_grad, reference_norm=ref_norm,
        variance_trace=tr_s, variance_trace_ci=var_ci,
        bias_norm=bias_norm, bias_norm_ci=bias_ci, relative_bias=relative_bias, relative_bias_ci=relative_ci,
        bias_pvalue=pvalue, bias_dof=dof, bias_resolution=bias_resolution(reference_variance),
        cosine_mean=cos_mean, cosine_mean_ci=cos_ci, gradient_cosine=grad_cos, gradient_cosine_ci=grad_cos_ci,
        pairwise_cosine=pair_mean, pairwise_cosine_ci=pair_ci,
        snr=snr, snr_ci=snr_ci, mse=mse, mse_ci=mse_ci, tail_kurtosis=tail_kurtosis, degenerate=degenerate,
    )
