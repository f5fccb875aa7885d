"""The calibration report over labelled embeddings (the gallery's people, or a folder of
labelled photos): genuine / impostor score distributions, FAR / FRR by threshold, the equal
error rate, the threshold for a target chance of naming a stranger at the current gallery size,
and the rates at the current threshold. ``build_report`` returns plain JSON-able data;
``plot_report`` draws it into a PNG (matplotlib, imported only when a plot is made).

Two views of the same embeddings (see service/calibration.py):

- *pairs*: every two photos of the same person (genuine) or of different people (impostor);
  FAR / FRR per comparison, the EER and the best-accuracy threshold come from these.
- *probes*: each photo in turn searched against everyone else, each person represented by their
  best example, as identify ranks people. ``miss_rate`` = share of photos whose best own other
  example stays below the threshold; ``stranger_chance`` = chance that a stranger's best score
  over ``gallery_size`` people reaches it (independent draws of the per-person best impostor
  score). Target thresholds are computed in this view.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import IO, Any

import numpy as np

from service.calibration import (
    best_accuracy_threshold,
    equal_error_rate,
    far_frr,
    open_set_threshold_detail,
    pair_scores,
    person_best_scores,
    stranger_chance,
)

DEFAULT_TARGETS = (0.01, 0.05, 0.1)
MIN_PEOPLE = 2  # people with >= 2 examples below which there is no report at all
FEW_PEOPLE = 10  # ... and below which the report warns that it means little
FEW_GENUINE = 30
FEW_IMPOSTOR = 1000
MAX_EXAMPLES = 4000  # above this, a deterministic sample of people is used (pair work grows as n^2)


class NotEnoughExamplesError(ValueError):
    """Too few people with two or more examples to measure anything."""


def _r(x: float, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _rate(x: float) -> float | None:
    """A rate or chance to 6 significant digits (small rates keep their precision)."""
    return None if x is None or not math.isfinite(x) else float(f"{float(x):.6g}")


def _up(t: float) -> float:
    """A threshold for display, rounded UP to 4 decimals: a rounded threshold is never laxer."""
    shown = math.ceil(t * 10_000) / 10_000
    return shown if shown >= t else round(shown + 0.0001, 4)


def _summary(scores: np.ndarray) -> dict[str, Any]:
    if not len(scores):
        return {"count": 0}
    q = np.percentile(scores, [1, 5, 50, 95, 99])
    return {
        "count": len(scores),
        "min": _r(scores.min()),
        "p01": _r(q[0]),
        "p05": _r(q[1]),
        "median": _r(q[2]),
        "mean": _r(scores.mean()),
        "p95": _r(q[3]),
        "p99": _r(q[4]),
        "max": _r(scores.max()),
    }


def _sample_people(sizes: dict[str, int], max_examples: int, seed: int) -> list[str]:
    """People to use, all if their examples fit in ``max_examples``; else a seeded random
    sample, people with >= 2 examples first (they give the genuine scores)."""
    if sum(sizes.values()) <= max_examples:
        return sorted(sizes)
    rng = np.random.default_rng(seed)
    multi = sorted(p for p, n in sizes.items() if n >= 2)
    single = sorted(p for p, n in sizes.items() if n < 2)
    chosen, total = [], 0
    for group in (multi, single):
        for k in rng.permutation(len(group)):
            if total + sizes[group[k]] <= max_examples:
                chosen.append(group[k])
                total += sizes[group[k]]
    return sorted(chosen)


def _grid(genuine: np.ndarray, impostor: np.ndarray, extra: Iterable[float], fine: bool = False) -> np.ndarray:
    """Thresholds in steps of 0.01 (0.02 over wide ranges; a quarter of that when ``fine``)
    from around the impostor median / the lowest genuine scores up to the highest score."""
    lo = min(float(np.median(impostor)), float(np.percentile(genuine, 1)), *extra)
    hi = max(float(genuine.max()), float(impostor.max()), *extra)
    lo, hi = math.floor(lo * 100) / 100, min(1.0, math.ceil(hi * 100) / 100)
    step = (0.01 if hi - lo <= 1.0 else 0.02) / (4 if fine else 1)
    return np.round(np.arange(lo, hi + step / 2, step), 4)


def build_report(
    embeddings_by_person: Mapping[str, np.ndarray],
    *,
    gallery_size: int,
    targets: Iterable[float] = DEFAULT_TARGETS,
    current_threshold: float,
    max_examples: int = MAX_EXAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The report as JSON-able data. Genuine scores come from people with >= 2 examples,
    impostor scores from every two different people (people with one example count there).
    Raises NotEnoughExamplesError when fewer than 2 people have >= 2 examples."""
    targets = [float(t) for t in targets]
    for t in targets:
        if not 0 < t < 1:
            raise ValueError(f"target must be in (0, 1), got {t}")
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be >= 1, got {gallery_size}")
    arrays = {p: np.atleast_2d(np.asarray(e, dtype=np.float64)) for p, e in embeddings_by_person.items() if len(e)}
    sizes = {p: len(e) for p, e in arrays.items()}
    with_pairs = sum(1 for n in sizes.values() if n >= 2)
    if with_pairs < MIN_PEOPLE:
        raise NotEnoughExamplesError(
            f"{with_pairs} people have 2 or more face examples; a calibration report needs at least {MIN_PEOPLE} "
            f"(better {FEW_PEOPLE} or more): teach 2-3 photos each of several people"
        )
    used = _sample_people(sizes, max_examples, seed)
    labels = [p for p in used for _ in range(sizes[p])]
    embeddings = np.concatenate([arrays[p] for p in used])
    # sorted once: every rate below is a binary search into these
    genuine, impostor = (np.sort(a) for a in pair_scores(embeddings, labels, seed=seed))
    probe_genuine, probe_impostor = (np.sort(a) for a in person_best_scores(embeddings, labels, seed=seed))

    eer, eer_threshold = equal_error_rate(genuine, impostor)
    best_t, best_acc = best_accuracy_threshold(genuine, impostor)

    def rates_at(thresholds: np.ndarray) -> list[dict[str, Any]]:
        far, frr = far_frr(genuine, impostor, thresholds)
        draw_far, miss = far_frr(probe_genuine, probe_impostor, thresholds)
        return [
            {
                "threshold": _r(t, 4),
                "far": _rate(a),
                "frr": _rate(b),
                "stranger_chance": _rate(stranger_chance(c, gallery_size)),
                "miss_rate": _rate(d),
            }
            for t, a, b, c, d in zip(thresholds, far, frr, draw_far, miss, strict=True)
        ]

    target_rows = []
    warnings: list[str] = []
    for target in targets:
        d = open_set_threshold_detail(probe_impostor, target, gallery_size)
        shown = _up(d.threshold)
        row = rates_at(np.array([shown]))[0]
        target_rows.append(
            {
                "target": target,
                "threshold": shown,
                "per_comparison_far": _rate(d.per_draw_far),
                "expected_impostor_scores_above": _rate(d.expected_above),
                "resolved": d.resolved,
                "far": row["far"],
                "frr": row["frr"],
                "miss_rate": row["miss_rate"],
                "stranger_chance": row["stranger_chance"],
            }
        )
    unresolved = [row for row in target_rows if not row["resolved"]]
    if unresolved:
        chances = ", ".join(f"{row['target']:.3g}" for row in unresolved)
        finest = min(row["per_comparison_far"] for row in unresolved)
        warnings.append(
            f"A chance of {chances} of naming a stranger among {gallery_size} people needs a per-comparison false-accept rate "
            f"down to {finest:.2g}, finer than {len(probe_impostor)} different-person scores can measure: the threshold shown "
            f"({unresolved[0]['threshold']:.4f}) is just above the highest different-person score seen, and the real chance "
            "there is unknown. More people (or photos of them) are needed to pin it down."
        )

    n_people = len(used)
    used_with_pairs = sum(1 for p in used if sizes[p] >= 2)
    if used_with_pairs < FEW_PEOPLE or len(genuine) < FEW_GENUINE:
        warnings.insert(
            0,
            f"Only {used_with_pairs} people with 2 or more examples ({len(genuine)} same-person pairs): rates measured on so few "
            f"comparisons can be far off. Teach 2-3 photos each of at least {FEW_PEOPLE} people for a meaningful report.",
        )
    if len(impostor) < FEW_IMPOSTOR:
        warnings.append(
            f"Only {len(impostor)} different-person pairs: false-accept rates below {1 / max(1, len(impostor)):.2g} "
            "cannot be measured; more people are needed."
        )
    if len(used) < len(sizes):
        warnings.append(
            f"The data holds {sum(sizes.values())} examples of {len(sizes)} people; this report uses a sample of {len(labels)} "
            f"examples of {n_people} people."
        )

    extra = [current_threshold, *[r["threshold"] for r in target_rows]]
    extra = [x for x in extra if -1 <= x <= 1]
    all_scores = np.concatenate([genuine, impostor])
    lo, hi = math.floor(all_scores.min() * 100) / 100, math.ceil(all_scores.max() * 100) / 100
    width = 0.005 if hi - lo <= 0.4 else 0.01 if hi - lo <= 1 else 0.02
    edges = np.round(np.arange(lo, hi + width * 1.5, width), 3)
    return {
        "people": n_people,
        "people_with_pairs": used_with_pairs,
        "examples": len(labels),
        "gallery_size": gallery_size,
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "probes": {"genuine": len(probe_genuine), "impostor": len(probe_impostor)},
        "current_threshold": _r(current_threshold, 4),
        "current": rates_at(np.array([current_threshold]))[0],
        "eer": {"rate": _rate(eer), "threshold": _r(eer_threshold, 4)},
        "best_accuracy": {"threshold": _r(best_t, 4), "accuracy": _rate(best_acc)},
        "targets": target_rows,
        "scores": {
            "genuine": _summary(genuine),
            "impostor": _summary(impostor),
            "probe_genuine_best": _summary(probe_genuine),
            "probe_impostor_best": _summary(probe_impostor),
        },
        "histogram": {
            "edges": [float(x) for x in edges],
            "genuine": np.histogram(genuine, edges)[0].tolist(),
            "impostor": np.histogram(impostor, edges)[0].tolist(),
        },
        "table": rates_at(_grid(genuine, impostor, extra)),
        "curve": rates_at(_grid(genuine, impostor, extra, fine=True)),
        "warnings": warnings,
    }


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """A short human summary of a report (the command prints it)."""
    cur = report["current"]
    lines = [
        f"{report['people']} people ({report['people_with_pairs']} with 2+ examples), {report['examples']} examples: "
        f"{report['genuine_pairs']} same-person and {report['impostor_pairs']} different-person pairs",
        f"same-person scores: median {report['scores']['genuine']['median']:.3f}, 1st percentile {report['scores']['genuine']['p01']:.3f}",
        f"different-person scores: median {report['scores']['impostor']['median']:.3f}, "
        f"99th percentile {report['scores']['impostor']['p99']:.3f}, max {report['scores']['impostor']['max']:.3f}",
        f"equal error rate {report['eer']['rate']:.2%} at {report['eer']['threshold']:.4f}",
        f"current threshold {report['current_threshold']:.4f}: pair FAR {cur['far']:.2%}, FRR {cur['frr']:.2%}, "
        f"photos missed {cur['miss_rate']:.2%}, chance to name a stranger among {report['gallery_size']} people "
        f"{cur['stranger_chance']:.2%}",
    ]
    for row in report["targets"]:
        flag = "" if row["resolved"] else " (beyond what the data resolves)"
        lines.append(
            f"for a {row['target']:.0%} chance of naming a stranger among {report['gallery_size']} people: threshold "
            f"{row['threshold']:.4f}{flag}, photos missed {row['miss_rate']:.2%}"
        )
    lines += [f"warning: {w}" for w in report["warnings"]]
    return lines


def plot_report(report: Mapping[str, Any], path_or_buffer: str | IO[bytes] | Any) -> None:
    """Write the report as a PNG: genuine vs impostor score histograms with the thresholds
    marked, and FAR / FRR / stranger chance / miss rate by threshold. Uses matplotlib's Agg
    canvas directly (no pyplot, no global backend switch), so it is safe in a server thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    hist_ax, rate_ax = fig.subplots(2, 1)
    edges = np.asarray(report["histogram"]["edges"])
    widths = np.diff(edges)
    for key, color, label in (("impostor", "tab:red", "different people"), ("genuine", "tab:green", "same person")):
        counts = np.asarray(report["histogram"][key], dtype=np.float64)
        density = counts / max(1.0, counts.sum()) / widths
        hist_ax.stairs(density, edges, fill=True, alpha=0.45, color=color, label=f"{label} ({int(counts.sum())} pairs)")
    table = report.get("curve") or report["table"]
    t = np.array([row["threshold"] for row in table], dtype=np.float64)

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if row[key] is None else row[key] for row in table], dtype=np.float64)

    rate_ax.plot(t, col("far"), color="tab:red", label="FAR (pair)")
    rate_ax.plot(t, col("frr"), color="tab:green", label="FRR (pair)")
    rate_ax.plot(t, col("stranger_chance"), color="tab:purple", linestyle="--", label=f"stranger named (N={report['gallery_size']})")
    rate_ax.plot(t, col("miss_rate"), color="tab:olive", linestyle="--", label="photo missed")
    marks = [(report["current_threshold"], "black", "-", f"current {report['current_threshold']:.4f}")]
    marks.append((report["eer"]["threshold"], "grey", ":", f"EER {report['eer']['rate']:.2%} at {report['eer']['threshold']:.4f}"))
    for row in report["targets"]:
        mark = "" if row["resolved"] else " (unresolved)"
        marks.append((row["threshold"], "tab:blue", "--", f"{row['target']:.3g} chance to name a stranger: {row['threshold']:.4f}{mark}"))
    for ax in (hist_ax, rate_ax):
        for x, color, style, label in marks:
            ax.axvline(x, color=color, linestyle=style, linewidth=1, label=label if ax is hist_ax else None)
    hist_ax.set_xlabel("cosine similarity")
    hist_ax.set_ylabel("density")
    hist_ax.set_title(
        f"{report['people']} people, {report['examples']} examples: {report['genuine_pairs']} same-person, "
        f"{report['impostor_pairs']} different-person pairs"
    )
    hist_ax.legend(fontsize=8, loc="upper left")
    rate_ax.set_xlabel("threshold (match when similarity >= threshold)")
    rate_ax.set_ylabel("rate (linear below 0.001, log above)")
    rate_ax.set_yscale("symlog", linthresh=1e-3)
    rate_ax.set_ylim(0, 1.05)
    lo = min(float(t.min()), *(m[0] for m in marks)) - 0.01
    hi = max(float(t.max()), *(m[0] for m in marks)) + 0.01
    rate_ax.set_xlim(lo, hi)
    rate_ax.legend(fontsize=8, loc="center left")
    rate_ax.grid(alpha=0.3)
    if report["warnings"]:
        fig.suptitle("warning: " + report["warnings"][0][:110] + ("..." if len(report["warnings"][0]) > 110 else ""), fontsize=8)
    fig.savefig(path_or_buffer, format="png")
