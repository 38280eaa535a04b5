"""The report's README.md, written section by section from an Analysis (pure: returns text).

`readme` joins the sections in order; each `_section_*` function returns its lines and reads only the
Analysis (and the table and figure list it is handed), so a section can change without touching the rest.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pandas as pd

from hpstudy.reporting import stats, testset_report
from hpstudy.reporting.analysis import (
    ALPHA,
    FACTOR_LABELS,
    HISTORY_OF,
    HISTORY_OF_TEST,
    MIN_SPLIT_N,
    SMALL_N,
    Analysis,
    Comparison,
    counted,
    describe_seeds,
    epoch_means,
    factor_levels,
    format_value,
    metric_of,
    training_length_hint,
    trial_label,
)


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(x: float, fmt: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _lie(n: int) -> str:
    return "lies" if n == 1 else "lie"


def _are(n: int) -> str:
    return "is" if n == 1 else "are"


def _name(metric) -> str:
    """A metric's label for prose ('test acc.' rather than 'test acc. (%)')."""
    return metric.label.replace(" (%)", "")


def _value_text(metric, value: float) -> str:
    """A value as the README prints it: accuracies in percent with 2 decimals, others with 4 digits."""
    return f"{metric.scale(value):.2f}" if metric.kind == "acc" else f"{value:.4g}"


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def _section_header(a: Analysis) -> list[str]:
    s, meta = a.study, a.study.meta
    lines = [f"# {meta.get('title', s.name)}", ""]
    if meta.get("authors"):
        lines.append(
            f"Authors: {', '.join(meta['authors'])}" + (f" ({meta['year']})" if meta.get("year") else "") + "."
        )
    if meta.get("citation"):
        lines.append(f"Citation: {meta['citation']}")
    for key in ("doi", "url"):
        if meta.get(key):
            lines.append(f"{key.upper()}: {meta[key]}")
    lines += [
        "",
        f"Study `{s.name}` ({s.design_kind} design, {len(s.trials)} configurations), study file "
        f"`{s.path.name}` (sha256 `{s.sha256[:16]}`)." + (f" {meta['description']}" if meta.get("description") else ""),
        "",
    ]
    return lines


def _counted(a: Analysis) -> list:
    """The distinct published accuracies and losses that were placed against seeds (each counted once)."""
    return counted(a.verdicts)


def _where(v) -> str:
    """What a verdict's seeds are: the published configuration, or (a search) the trial it is placed against."""
    return v.against_label or v.where


def _what_varies(a: Analysis) -> str:
    """What differs between two seeds of one configuration, from the study's own settings."""
    dropout = any(r.trial.config.dropout > 0 for r in a.rows)
    parts = (
        "the initial weights, the order of the training images and the dropout masks"
        if dropout
        else "the initial weights and the order of the training images"
    )
    text = (
        f"Between seeds only the random draws change: {parts}. The data split and the test images are the same "
        "in every run, so the spread between seeds does not include the sampling error of the test set."
    )
    if a.paired:
        text += (
            ' Seeds are common random numbers (`seeding = "common"`): configurations run with the same seed '
            "index share these draws wherever the shapes allow, and comparisons pair them by seed."
        )
    return text


def _section_summary(a: Analysis) -> list[str]:
    """One plain paragraph: what was reproduced, what was not, what differs significantly, what varies."""
    n_seeds = sorted({len(r.seeds) for r in a.rows})
    seeds = _plural(n_seeds[0], "seed") if len(n_seeds) == 1 else f"{n_seeds[0]} to {n_seeds[-1]} seeds"
    sentences = [f"In short: {_plural(len(a.rows), 'configuration')}, each re-run with {seeds}."]
    counted = _counted(a)
    if counted:
        states = Counter(v.placement.state for v in counted)
        rep, con, out = (states.get(k, 0) for k in ("reproduced", "consistent", "outside"))
        margin = _diff_text_abs(a, a.study.smallest_effect)
        sentences.append(
            f"Of the paper's {len(counted)} distinct published accuracies and losses, {rep} {_are(rep)} reproduced "
            f"(shown equivalent to the seeds' mean within ±{margin}, the study's smallest effect), {con} {_are(con)} "
            f"consistent with the seeds but the seeds cannot tell, and {out} {_lie(out)} outside the seeds' 95% "
            "prediction interval after Holm's correction over the published values."
        )
        outside = [v for v in counted if v.placement.state == "outside"]
        if 0 < len(outside) <= 3:
            sentences.append(
                "Outside: "
                + "; ".join(
                    f"{_name(metric_of(v.metric))} at {_where(v)} (published {_value_text(metric_of(v.metric), v.published)}, "
                    f"seeds' mean {_value_text(metric_of(v.metric), v.placement.mean)})"
                    for v in outside
                )
                + "."
            )
        elif outside:
            worst = min(outside, key=lambda v: v.placement.p_outside)
            m = metric_of(worst.metric)
            sentences.append(
                f"The farthest is {_name(m)} at {_where(worst)}: published {_value_text(m, worst.published)}, "
                f"seeds' mean {_value_text(m, worst.placement.mean)}."
            )
        searched = [v for v in counted if v.against_label]
        if searched:
            sentences.append(
                f"A published search result is placed against {searched[0].against_label}, which was "
                "selected on these same runs, so its mean is biased upwards."
            )
    elif a.study.published:
        sentences.append("No published accuracy or loss could be placed against two or more seeds.")
    else:
        sentences.append("The study file records no published numbers.")
    if a.best_vs_rest:
        sig = sum(c.holm_p < ALPHA for c in a.best_vs_rest)
        sentences.append(
            f"{sig} of {len(a.best_vs_rest)} comparisons of the best configuration with the others "
            f"are significant on {_name(a.primary)} after Holm's correction."
        )
    if a.effects:
        sentences += _effects_summary(a)
    sentences.append(_what_varies(a))
    return [" ".join(sentences), ""]


def _effects_summary(a: Analysis) -> list[str]:
    """The factorial's significant terms (Holm over the terms, tested on the interval scale); a factor that
    interacts significantly is described by its simple effects, since its main effect misleads."""
    interacting = {f for s in a.simple_effects for f in (s.factor,)}
    mains = [e for e in a.effects if len(e.term) == 1 and e.holm_p < ALPHA and e.term[0] not in interacting]
    inter = [e for e in a.effects if len(e.term) > 1 and e.holm_p < ALPHA]
    out = []
    if mains:
        out.append(
            "Significant main effects (Holm over the terms): "
            + ", ".join(f"{FACTOR_LABELS.get(e.term[0], e.term[0])} ({_diff_text(a, e.estimate)})" for e in mains)
            + "."
        )
    elif not interacting:
        out.append("No factor has a significant main effect.")
    out.append(f"{_plural(len(inter), 'interaction')} significant." if inter else "No interaction is significant.")
    for f in sorted(interacting, key=lambda f: a.effects_factors.index(f)):
        parts = [s for s in a.simple_effects if s.factor == f]
        out.append(
            f"{FACTOR_LABELS.get(f, f).capitalize()} interacts, so its effect is given within each level: "
            + ", ".join(
                f"{_diff_text(a, s.effect.estimate)} at {FACTOR_LABELS.get(s.within, s.within)} "
                f"{format_value(s.within, s.level)}{'' if s.effect.holm_p < ALPHA else ' (not significant)'}"
                for s in parts
            )
            + "."
        )
    return out


def _section_runs(a: Analysis) -> list[str]:
    runs, s = a.runs, a.study
    counts = Counter(r.cells[a.primary.column].n + r.cells[a.primary.column].n_nonfinite for r in a.rows)
    lines = ["## Runs", ""]
    if len(counts) == 1:
        per = f"{next(iter(counts))} seeds for each of the {len(a.rows)} configurations"
    else:
        per = "; ".join(
            f"{n} seeds for {c} configuration{'s' if c > 1 else ''}" for n, c in sorted(counts.items(), reverse=True)
        )
    lines.append(f"- Runs: {len(runs)}; seeds {describe_seeds(a.seeds)} ({per}).")
    lines.append(
        "- Seeding: "
        + (
            "common random numbers: runs with the same seed index share their keys across "
            "configurations; comparisons are paired by seed."
            if a.paired
            else "independent: each run's keys come from its whole configuration and seed, so runs of "
            "different configurations share no randomness; comparisons treat them as independent samples."
        )
    )
    validation = str(s.validation)
    lines.append(
        "- Validation data: "
        + {
            "test": "the test set (as Keras' validation_data=(x_test, y_test)): validation metrics are test metrics"
            + (
                " (the final validation metrics repeat the test metrics run for run and are shown once, as test metrics)."
                if a.dropped
                else "."
            ),
            "none": "none (no validation metrics).",
        }.get(validation, f"the last {validation.partition(':')[2]} training images, held out from training.")
    )
    ignored = runs.attrs.get("ignored", 0)
    if ignored:
        lines.append(
            f"- {ignored} other stored runs (other seeds, or configurations the study file no longer describes) are not used."
        )
    shas = sorted(set(str(x) for x in runs["study_sha256"]))
    if shas != [s.sha256]:
        lines.append(
            f"- Runs were stored under study file versions {', '.join(f'`{x[:16]}`' for x in shas)}; "
            "their configurations are the current file's (matched by run id)."
        )
    fps = Counter(str(x) for x in runs["dataset_fingerprint"])
    lines.append(
        "- Dataset fingerprint: "
        + "; ".join(f"`{k}`" + (f" ({c} runs)" if len(fps) > 1 else "") for k, c in sorted(fps.items()))
    )
    widths = Counter(int(w) for w in runs["chunk_width"])
    lines.append(
        "- Chunk widths (runs trained together in one vmapped program; part of a result's identity): "
        + ", ".join(f"{w} ({c} runs)" for w, c in sorted(widths.items()))
        + "."
    )
    for when, reason, n in runs.attrs.get("amendments", []):
        lines.append(
            f"- Amended: the evaluation values (validation and test metrics, not the training) of {n} of these runs "
            f"were re-made on {when} by `hpstudy verify --amend-evaluation`; the reason given: {_md_escape(reason)} "
            "Every old and new value is in the store's `amendments.jsonl`."
        )
    compile_s = runs.drop_duplicates(["group_id", "chunk_width", "compile_seconds"])["compile_seconds"].sum()
    lines.append(
        f"- Training time: {float(runs['seconds'].sum()):.1f} s of chunk wall time over all runs, plus "
        f"{float(compile_s):.1f} s compiling (hardware-dependent; per configuration under Training time below)."
    )
    lines.append("- Environment:")
    lines += ["  " + e for e in _environment_lines(runs)]
    return lines + [""]


def _assumption_value(a: Analysis, x: dict) -> str:
    """An assumption's value; the seed count as the data has it (a study file states only its default)."""
    value = _md_escape(x.get("value", ""))
    if x.get("key") == "study.seeds":
        n = sorted({len(r.seeds) for r in a.rows})
        stored = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
        if stored != str(x.get("value")):
            value = f"{value} (default); this report: {stored} seeds per configuration"
    return value


def _section_assumptions(a: Analysis) -> list[str]:
    s = a.study
    lines = ["## Assumptions", ""]
    if s.assumptions:
        lines += ["| setting | value | why |", "|---|---|---|"]
        lines += [
            f"| `{_md_escape(x.get('key', ''))}` | {_assumption_value(a, x)} | {_md_escape(x.get('why', ''))} |"
            for x in s.assumptions
        ]
    else:
        lines.append("The study file records no assumptions.")
    return lines + [""]


def _section_results(a: Analysis, table_md: str) -> list[str]:
    boot = any(math.isfinite(r.boot[0]) for r in a.rows)
    bold = (
        "bold: the best of its group, better than every other configuration of the group after Holm's "
        "correction (see Comparisons); "
        if a.significant_best
        else ""
    )
    return [
        "## Results",
        "",
        f"Mean over seeds and the 95% confidence interval of the mean, computed on the logit scale for accuracies "
        f"and on the log scale for losses (then mapped back), so that no interval leaves the possible range; {bold}"
        f'"pub." is the paper\'s value; n/a: one seed, no interval. Also as [table.csv](table.csv) (every number, '
        f"with standard deviations, 95% prediction intervals for one more run"
        + (
            f", a bootstrap CI of {a.primary.label}"
            if boot
            else f"; no bootstrap interval, which needs at least {stats.MIN_BOOTSTRAP_N} seeds per configuration"
        )
        + ", and the measured training times) and [table.tex](table.tex) (a booktabs float for a paper).",
        "",
        table_md.rstrip(),
        "",
    ]


def _verdict_text(v, m) -> str:
    p = v.placement
    if p is None:
        return v.against if v.against.startswith("no stored") else ("not placed" if v.note else "no runs")
    if p.state == "too few seeds":
        return "too few seeds"
    if p.state == "outside":
        return f"**outside** ({p.verdict})"
    if p.state == "reproduced":
        return f"**reproduced** (TOST p {_num(p.tost_p, '.2g')}: mean within ±{_diff_value(m, p.margin)})"
    equal = f"; all {p.n} seeds equal, no interval" if p.all_equal else ""
    if not math.isfinite(p.margin):
        why = "no equivalence margin is stated for this metric"
    elif math.isfinite(p.ci90_low):
        lo, hi = p.rounded[1] - p.margin, p.rounded[0] + p.margin
        bound = (lambda x: min(max(x, 0.0), 1.0)) if m.kind == "acc" else (lambda x: max(x, 0.0))
        why = (
            f"reproduced needs the mean's 90% interval, here [{_value_text(m, bound(p.ci90_low))}, "
            f"{_value_text(m, bound(p.ci90_high))}], to lie "
            + (
                f"inside [{_value_text(m, lo)}, {_value_text(m, hi)}], the values within ±{_diff_value(m, p.margin)} "
                "of every point of the published value's rounding interval"
                if lo <= hi
                else f"within ±{_diff_value(m, p.margin)} of every point of the published value's rounding interval, "
                "which is wider than that: it cannot be shown reproduced"
            )
        )
    else:
        why = "no interval"
    after_holm = f"{p.verdict}; " if p.verdict.startswith("consistent after") else ""
    return f"**consistent, but the seeds cannot tell** ({after_holm}{why}{equal})"


def _diff_value(m, value: float) -> str:
    return f"{m.scale(value):.2g} pp" if m.kind == "acc" else f"{value:.2g}"


def _verdict_table(a: Analysis) -> list[str]:
    if not a.verdicts:
        return ["The study file records no published numbers."]
    lines = [
        "| source | configuration | metric | published | seeds: mean (sd) | 95% prediction interval | z | n | Holm p | P(beyond seeds) | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    previous = None
    timing = {t.trial_id: t for t in a.timing}
    for v in a.verdicts:
        m = metric_of(v.metric)
        p = v.placement
        if m.kind == "time":
            t = timing.get(v.trial_id)
            ours = f"{t.seconds_per_run:.3g} s (median)" if t else "n/a"
            same = previous == (v.source, v.where)
            previous = (v.source, v.where)
            lines.append(
                f"| {'' if same else _md_escape(v.source)} | {'' if same else _md_escape(v.where)} | {m.label} | "
                f"{_value_text(m, v.published)} | {ours} | n/a | n/a | {t.runs if t else 0} | n/a | n/a | reference only: "
                "hardware-dependent; ours is chunk wall time / runs in the chunk, on a machine shared with other "
                "jobs (an upper bound), the paper's on its own hardware: not comparable |"
            )
            continue
        if p is None:
            cells = ["n/a"] * 3
            beyond = holm = "n/a"
        else:
            sc = m.scale
            spread = (
                f"{sc(p.mean):.2f} ({_num(sc(p.std), '.2g')})"
                if m.kind == "acc"
                else f"{p.mean:.4g} ({_num(p.std, '.2g')})"
            )
            pi = "n/a"
            if math.isfinite(p.pi_low):
                pi = f"[{_value_text(m, p.pi_low)}, {_value_text(m, p.pi_high)}]"
            if p.all_equal:
                pi = f"none: all {p.n} seeds equal"
            cells = [spread, pi, _num(p.z, "+.2f")]
            beyond = f"{p.p_beyond_range:.2f}"
            holm = _num(v.holm_p, ".2g")
        verdict = _verdict_text(v, m)
        notes = [x for x in (v.note,) if x]
        if v.against and v.n:
            notes.insert(0, f"against the {v.against}")
        if v.ties:
            notes.append("ties: " + "; ".join(v.ties))
        if v.qualified_by and p is not None:
            notes.append("qualified by a known setup difference: " + "; ".join(v.qualified_by))
        if v.also:
            notes.append(
                "the same number against the same seeds is also listed as " + "; ".join(v.also) + " (counted once)"
            )
        if notes:
            verdict += "; " + "; ".join(notes)
        same = previous == (v.source, v.where)
        previous = (v.source, v.where)
        lines.append(
            f"| {'' if same else _md_escape(v.source)} | {'' if same else _md_escape(v.where)} | {m.label} | "
            f"{_value_text(m, v.published)} | "
            + " | ".join(cells)
            + f" | {v.n} | {holm} | {beyond} | {_md_escape(verdict)} |"
        )
    counted = _counted(a)
    states = Counter(v.placement.state for v in counted)
    m_count = len(counted)
    margin = _diff_text_abs(a, a.study.smallest_effect)
    lines += [
        "",
        f"**{states.get('reproduced', 0)} of {m_count}** distinct published accuracies and losses are "
        f"reproduced, **{states.get('consistent', 0)}** consistent but the seeds cannot tell, "
        f"**{states.get('outside', 0)}** outside. Each distinct published number is counted once (a number "
        "repeated against the same seeds, such as a tie listed twice or a final validation value equal to the test "
        "value, is merged), and is taken as the interval its printed digits stand for (98.2 is [98.15, 98.25)). "
        f"Reproduced: two one-sided t-tests (TOST, alpha {ALPHA}) show the seeds' mean within ±{margin} "
        "(`smallest_effect`) of every point of that interval, i.e. the mean's 90% t interval lies inside the "
        "margin; no margin is stated for losses, so a loss is at most consistent. Outside: beyond the 95% "
        "prediction interval for one more run (Student t with n - 1 degrees of freedom, on the logit scale for "
        "accuracies and the log scale for losses, so it stays in range), with its p corrected by Holm's method "
        f"over the {m_count} values (Holm p). Consistent: neither; more seeds narrow the mean's interval, but "
        "a value more than the margin from the mean is never reproduced. "
        + _expected_false(m_count)
        + " P(beyond seeds) = 2 / (n + 1): the chance that one more run of the same configuration lands beyond all n "
        "seeds, so a published value beyond them is weak evidence at small n. z is (published - mean) / sd. "
        "A known setup difference recorded under Assumptions qualifies a verdict where its key names the "
        "configuration's flavour or its text names that implementation; ties between configurations for a "
        "seed's best go to the one listed first in the design, and each tie is listed.",
    ]
    if any(metric_of(v.metric).kind == "time" for v in a.verdicts):
        lines[-1] += " Published training times are listed for reference only: they depend on the hardware."
    return lines


def _expected_false(m: int) -> str:
    """How many 'outside' verdicts chance alone gives among m published values that were all reproduced."""
    if m == 0:
        return ""
    return (
        f"Among {m} published values that all came from our distribution, one value's 95% interval would call "
        f"about {0.05 * m:.2g} of them outside by chance alone (at least one with probability "
        f'{1 - 0.95**m:.2f}); Holm\'s correction keeps the chance of any false "outside" at or below {ALPHA}.'
    )


def _epoch_ranges(states: Sequence[str]) -> str:
    """('consistent', 'consistent', 'outside') -> 'consistent after epochs 1-2, outside after epoch 3'."""
    parts, start = [], 0
    for i in range(1, len(states) + 1):
        if i == len(states) or states[i] != states[start]:
            span = f"epoch {start + 1}" if i - 1 == start else f"epochs {start + 1}-{i}"
            parts.append(f"{states[start]} after {span}")
            start = i
    return ", ".join(parts)


def _section_sensitivity(a: Analysis) -> list[str]:
    """How each verdict moves with the assumptions the stored runs can speak to: training length (from each
    run's per-epoch history) and, where the study file names one to compare with, the other study's setup."""
    items = [v for v in _counted(a) if v.by_epoch and len(set(v.by_epoch)) > 1]
    steady = [v for v in _counted(a) if v.by_epoch and len(set(v.by_epoch)) == 1]
    if not items and not steady:
        return _size_sensitivity(a)
    lines = [
        "### Sensitivity of the verdicts to training length",
        "",
        "Each verdict again, had every run stopped after each epoch (from the runs' per-epoch histories; runs "
        "that stopped early carried forward; one value's 95% interval, not corrected over the family). An "
        "epoch count or an early-stopping rule the paper does not state can move a verdict only where these "
        "differ. Patience and the training-set size have no runs here to show their effect"
        + (f", except through `{a.contrast.other}` below" if a.contrast is not None else "")
        + ".",
        "",
    ]
    for v in items:
        m = metric_of(v.metric)
        lines.append(
            f"- {_md_escape(_name(m))} at {_md_escape(_where(v))} (published {_value_text(m, v.published)}): "
            f"{_epoch_ranges(v.by_epoch)}."
        )
    if steady:
        lines.append(
            f"- {len(steady)} other verdict{'s' if len(steady) > 1 else ''} would be the same after every epoch."
        )
    return lines + [""] + _size_sensitivity(a)


def _size_sensitivity(a: Analysis) -> list[str]:
    """Each verdict on the runs of the study the study file compares with (compare_with), which train on
    another number of images: the training-set-size sensitivity, with what else differs between them."""
    c = a.contrast
    if c is None or not c.verdicts:
        return []
    here, there = c.training_images
    moved = [x for x in c.verdicts if x.here != x.there]
    lines = [
        "### Sensitivity of the verdicts to the training-set size",
        "",
        f"Each verdict that names one configuration again, on the runs of the same configuration in `{c.other}` "
        f"({there:,} training images instead of {here:,}); both sides at one value's 95% interval, not corrected "
        "over the family, so a verdict here may differ from the table above. The training-set size is not the "
        f"only difference: {c.confound} {len(moved)} of {len(c.verdicts)} verdict{_s(len(c.verdicts))} "
        f"would change.",
        "",
    ]
    for x in moved:
        v, m = x.verdict, metric_of(x.verdict.metric)
        lines.append(
            f"- {_md_escape(_name(m))} at {_md_escape(_where(v))} (published {_value_text(m, v.published)}): "
            f"{x.here} on these runs ({here:,} images), {x.there} on `{c.other}`'s {x.n} runs ({there:,} images, "
            f"mean {_value_text(m, x.mean)})."
        )
    if len(moved) < len(c.verdicts):
        rest = len(c.verdicts) - len(moved)
        lines.append(f"- {rest} other verdict{_s(rest)} would be the same on `{c.other}`'s runs.")
    return lines + [""]


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _environment_lines(runs: pd.DataFrame) -> list[str]:
    envs = Counter(str(e) for e in runs["environment"])
    lines = []
    for text, count in sorted(envs.items(), key=lambda kv: (-kv[1], kv[0])):
        try:
            env = json.loads(text)
        except (TypeError, ValueError):
            env = {}
        packages = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
        prefix = f"- {count} runs: " if len(envs) > 1 else "- "
        lines.append(
            f"{prefix}Python {env.get('python', '?')}; {packages or 'package versions not recorded'}; "
            f"{env.get('backend', '?')} backend, device {env.get('device_kind', '?')} x{env.get('device_count', '?')}; "
            f"CPU {env.get('cpu_model', '?')} (ISA {', '.join(env.get('isa', [])) or 'none recorded'}); "
            + (f"numerics {env['numerics']} (ISA floor {env.get('isa_floor', '?')}); " if env.get("numerics") else "")
            + f"XLA_FLAGS {env.get('xla_flags') or '(unset)'}; x64 {env.get('x64', '?')}; {env.get('platform', '?')}"
        )
    return lines


def _outside_reasons(a: Analysis) -> list[str]:
    """For the published accuracies and losses outside the prediction interval, where the seeds' mean
    learning curve meets them, and the likely reason that suggests (a hypothesis to check, not a proof)."""
    mapping = dict(HISTORY_OF)
    if str(a.study.meta.get("validation", "test")) == "test":
        mapping.update(HISTORY_OF_TEST)
    rows: dict[tuple[str, str], list[tuple[str, str]]] = {}
    seen = set()
    for v in a.verdicts:
        p = v.placement
        if p is None or p.state != "outside" or not v.trial_id or v.metric not in mapping:
            continue
        column = mapping[v.metric]
        runs = a.runs[a.runs["trial_id"] == v.trial_id]
        if column not in runs or runs.empty or (v.source, v.where, column, v.published) in seen:
            continue  # a final validation value equal to the test value it duplicates says nothing new
        seen.add((v.source, v.where, column, v.published))
        means = epoch_means([list(h) for h in runs[column]])
        m = metric_of(v.metric)
        epoch, reading = training_length_hint(v.published, means, m.better > 0)
        if not reading:
            continue
        fmt = (lambda x: f"{m.scale(x):.2f}") if m.kind == "acc" else (lambda x: f"{x:.4g}")  # noqa: B023 - called within this iteration
        fact = (
            f"{m.label} published {fmt(v.published)}, seeds {fmt(p.mean)} at the end and "
            f"{fmt(means[epoch - 1][0])} after epoch {epoch} of {len(means)}"
        )
        rows.setdefault((v.source, v.where), []).append((fact, reading))
    if not rows:
        return []
    lines = [
        "### Outside the prediction interval: likely reasons",
        "",
        "Where each published accuracy or loss outside the interval meets the seeds' mean learning curve "
        "(validation metrics per epoch; test metrics too where the validation set is the test set), and "
        "what that suggests. Read from the data: a hypothesis to check, not a proof.",
        "",
    ]
    for (source, where), items in rows.items():
        readings = list(dict.fromkeys(r for _, r in items))
        if len(readings) == 1:
            text = "; ".join(f for f, _ in items) + f". {readings[0][0].upper() + readings[0][1:]}."
        else:
            text = "; ".join(f"{f} ({r})" for f, r in items) + "."
        lines.append(f"- {_md_escape(source)} ({_md_escape(where)}): {_md_escape(text)}")
    return lines + [""]


CURVE_METRICS = {"best_val_accuracy": "val_accuracy", "final_val_accuracy": "val_accuracy"}
MAX_CURVE_TRIALS = 9


def _section_curves_meet(a: Analysis) -> list[str]:
    """Where each configuration's mean validation curve first reaches each published validation accuracy
    (small studies only: one line per configuration and published number)."""
    if len(a.rows) > MAX_CURVE_TRIALS or str(a.study.validation) == "none":
        return []
    items = []
    seen = set()
    for v in a.verdicts:
        if v.placement is None or v.metric not in CURVE_METRICS or (v.published, v.trials) in seen:
            continue
        seen.add((v.published, v.trials))
        m = metric_of(v.metric)
        lines = []
        for tid in v.trials:
            runs = a.runs[a.runs["trial_id"] == tid]
            means = epoch_means([list(h) for h in runs[CURVE_METRICS[v.metric]]])
            if not means:
                continue
            first = next((i + 1 for i, (x, _) in enumerate(means) if x >= v.published), None)
            best = max(range(len(means)), key=lambda i: means[i][0])
            where = (
                f"first at epoch {first} of {len(means)}"
                if first
                else f"not within {len(means)} epochs (highest {m.scale(means[best][0]):.2f} at epoch {best + 1})"
            )
            lines.append(f"- {_md_escape(trial_label(a.row(tid).trial))}: {where}.")
        if lines:
            items += (
                [f"Published {_name(m)} {_value_text(m, v.published)} ({_md_escape(v.source)}):", ""] + lines + [""]
            )
    if not items:
        return []
    return [
        "### Where the mean validation curves reach the published values",
        "",
        "The epoch at which the seeds' mean validation accuracy (runs that stopped early carried forward at their last value) first reaches "
        "the published value, per configuration.",
        "",
    ] + items


def _diff_text_abs(a: Analysis, value: float) -> str:
    m = a.primary
    return f"{m.scale(value):.2g} pp" if m.kind == "acc" else f"{value:.3g}"


def _diff_text(a: Analysis, value: float) -> str:
    m = a.primary
    return f"{m.scale(value):+.2f} pp" if m.kind == "acc" else f"{value:+.3g}"


def _comparison_table(a: Analysis, comps: Sequence[Comparison], metric=None) -> list[str]:
    m = metric or a.primary
    rank_name = "Wilcoxon p" if a.paired else "Mann-Whitney p"
    t_name = "paired t p" if a.paired else ("pooled t p" if any(c.result.pooled for c in comps) else "Welch p")
    show_rank = any(c.result.rank_min_p <= ALPHA for c in comps)
    show_prob_ci = any(math.isfinite(c.result.prob_low) for c in comps)
    unit = "pp" if m.kind == "acc" else m.label
    head = ["a", "b", "n (a, b)", f"mean a - b ({unit})", "95% CI", t_name, "Holm p"]
    head += [rank_name] if show_rank else []
    head += ["P(a > b)" + (" [95% CI]" if show_prob_ci else "")]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * (len(head) - 3)]
    for c in comps:
        r = c.result
        sc = m.scale
        cells = [
            _md_escape(trial_label(a.row(c.a).trial)),
            _md_escape(trial_label(a.row(c.b).trial)),
            f"{r.n_a}, {r.n_b}",
            f"{sc(r.mean_diff):+.2f}" if m.kind == "acc" else f"{r.mean_diff:+.3g}",
            f"[{_num(sc(r.ci_low), '+.2f')}, {_num(sc(r.ci_high), '+.2f')}]"
            if m.kind == "acc"
            else f"[{_num(r.ci_low, '+.3g')}, {_num(r.ci_high, '+.3g')}]",
            _num(r.t_pvalue, ".2g"),
            _num(c.holm_p, ".2g") + (" *" if c.holm_p < ALPHA else ""),
        ]
        if show_rank:
            cells.append(_num(r.rank_pvalue, ".2g") if r.rank_min_p <= ALPHA else "n/a")
        prob = f"{r.prob_improvement:.2f}"
        if r.prob_improvement in (0.0, 1.0):
            prob += " (complete separation)"
        elif show_prob_ci:
            prob += f" [{_num(r.prob_low, '.2f')}, {_num(r.prob_high, '.2f')}]"
        cells.append(prob)
        lines.append("| " + " | ".join(cells) + " |")
    if len(comps) > 12:
        lines = ["<details><summary>" + f"{len(comps)} comparisons" + "</summary>", "", *lines, "", "</details>"]
    return lines


def _section_comparisons(a: Analysis) -> list[str]:
    m = a.primary
    n_min = min((len(r.seeds) for r in a.rows), default=0)
    if a.paired:
        how = (
            "runs share their random draws by seed index (common random numbers), so differences are paired by "
            "seed: paired t-test, Wilcoxon signed-rank test"
        )
    else:
        how = (
            "runs of different configurations share no randomness, so they are compared as independent samples: "
            "Welch's t-test (its CI of the difference), Mann-Whitney U"
        )
    rank_min = stats.rank_min_p(n_min, n_min if not a.paired else 0, a.paired) if n_min else 1.0
    lines = [
        "## Comparisons",
        "",
        f"On {m.label}: {how}. Holm-corrected within each family (on the t-test's p); * marks Holm p < {ALPHA}. "
        "P(a > b) is the probability that a run of a beats a run of b (ties count half), as rliable reports it"
        + (
            f", with a percentile bootstrap CI (a and b resampled separately) where each side has at least "
            f"{stats.MIN_BOOTSTRAP_N} runs."
            if any(math.isfinite(c.result.prob_low) for c in a.best_vs_rest + a.factor_effects)
            else f"; no bootstrap CI for it below {stats.MIN_BOOTSTRAP_N} runs per side."
        ),
    ]
    if rank_min > ALPHA:
        lines[-1] += (
            f" The rank test is left out: with {n_min} runs per side its smallest possible p is "
            f"{rank_min:.2g}, above {ALPHA}."
        )
    else:
        lines[-1] += (
            f" Mann-Whitney p-values are exact (every split of the runs enumerated, ties included) up to "
            f"{stats.EXACT_SPLITS:,} splits."
            if not a.paired
            else ""
        )
    if a.pooled is not None:
        dfs = sorted({df for _, df in a.pooled.values()})
        cats = _group_factors(a)
        over = (
            f"the configurations of each group (same {' and '.join(FACTOR_LABELS.get(c, c) for c in cats)}; "
            if cats
            else f"all {len(a.rows)} configurations ("
        )
        lines[-1] += (
            f" With fewer than {SMALL_N} seeds per configuration, the t-tests use the within-configuration "
            f"variance pooled over {over}{dfs[0]}"
            + (f" to {dfs[-1]}" if len(dfs) > 1 else "")
            + " degrees of freedom; a configuration's own 2 leave Welch's test without power, and a "
            "configuration whose seeds are all equal makes it overconfident) instead of Welch's two-group "
            "variance."
        )
    lines.append("")
    if a.best_vs_rest:
        lines += [
            "### Best configuration against the others",
            "",
            "The best configuration was chosen on the same runs it is tested on, so these p-values are optimistic "
            "(selection bias); the paragraph below the table gives a selection-corrected estimate.",
            "",
        ]
        lines += _comparison_table(a, a.best_vs_rest) + [""]
        lines += _selection_lines(a) + _mcb_lines(a)
    if a.factor_effects:
        lines += [
            "### One factor at a time",
            "",
            "Pairs of configurations that differ in one factor only "
            "(a: the later level; numeric factors compare neighbouring levels).",
            "",
        ]
        lines += _comparison_table(a, a.factor_effects) + [""]
    if a.factor_note:
        lines += [a.factor_note, ""]
    if not a.best_vs_rest and not a.factor_effects:
        lines += ["No comparison possible: configurations need at least 2 runs each.", ""]
    return lines


def _mcb_lines(a: Analysis) -> list[str]:
    """Hsu's MCB: which configurations of each group the seeds cannot rule out as the best."""
    if not a.best_sets:
        return []
    parts = []
    for b in a.best_sets:
        names = [
            trial_label(a.row(t).trial, [f for f in a.factors if not b.group or f not in _group_factors(a)])
            for t in b.may_be_best
        ]
        where = f"{b.group}: " if b.group else ""
        shown = "; ".join(names) if len(names) <= 6 else "; ".join(names[:6]) + f"; and {len(names) - 6} more"
        parts.append(
            f"{where}{len(b.may_be_best)} of {b.size} ({shown})"
            + (" — the best, shown better than every other" if b.is_best else "")
        )
    return [
        (
            "Which could be the best (Hsu's multiple comparisons with the best, corrected for choosing the best "
            "on these runs): a configuration may be the best when its simultaneous 95% interval for its mean minus "
            "the best mean of the others reaches above 0 (variance pooled over the group's configurations; critical value "
            "Dunnett's exact one-sided one for the comparisons with the others, by numerical integration"
            + (
                ""
                if all(b.equal_n for b in a.best_sets)
                else "; where the configurations of a group have different numbers of runs, that value with each "
                "pair's own standard error, an approximation"
            )
            + "). "
        )
        + "; ".join(parts)
        + ".",
        "",
    ]


def _group_factors(a: Analysis) -> list[str]:
    """The categorical factors that split the best-against-the-others families."""
    return [f for f in a.factors if all(isinstance(r.trial.values.get(f, ""), str) for r in a.rows)]


def _selection_lines(a: Analysis) -> list[str]:
    """The selection-corrected best: chosen on half the seeds, estimated on the other half."""
    m = a.primary
    best = max(
        (r for r in a.rows if r.cells[m.column].n > 0),
        key=lambda r: (m.better or 1) * r.cells[m.column].summary.mean,
        default=None,
    )
    if best is None:
        return []
    naive = best.cells[m.column].summary
    head = (
        f"Selection-corrected best: on all seeds the best configuration, {trial_label(best.trial)}, has a mean "
        f"{_name(m)} of {_value_text(m, naive.mean)}, which is biased upwards because it was chosen on those runs."
    )
    if not a.selection:
        return [
            head + f" Splitting the seeds (choose on half, estimate on the other) needs at least "
            f"{MIN_SPLIT_N} seeds per configuration, 2 on each side; this study has fewer, so the correction "
            "for the choice is the multiple comparison with the best below.",
            "",
        ]
    parts = []
    for sp in a.selection:
        s_ = sp.summary
        ci = f" [95% CI {_value_text(m, s_.ci_low)}, {_value_text(m, s_.ci_high)}]" if math.isfinite(s_.ci_low) else ""
        parts.append(
            f"chosen on seeds {describe_seeds(sp.selected_on)}: {trial_label(a.row(sp.trial_id).trial)}, "
            f"whose mean on seeds {describe_seeds(sp.estimated_on)} is {_value_text(m, s_.mean)}{ci}"
        )
    return [
        head + " Choosing on alternate seeds and estimating on the others removes that bias (the first of a "
        "tie is taken): " + "; ".join(parts) + ".",
        "",
    ]


def _section_contrast(a: Analysis) -> list[str]:
    """Each configuration against the same configuration of the study the study file names (compare_with)."""
    c = a.contrast
    if c is None:
        return []
    sig = sum(x.holm_p < ALPHA for x in c.comparisons)
    lines = [
        f"## Against `{c.other}`",
        "",
        f"Each configuration's {c.metric.label} here (a) against the same configuration in `{c.other}` (b), as "
        "independent samples (Welch's t-test, Holm over the configurations). "
        + c.confound
        + f" {sig} of {len(c.comparisons)} differences {_are(sig)} significant after Holm's "
        "correction.",
        "",
    ]
    return lines + _comparison_table(a, c.comparisons, c.metric) + [""]


def _section_effects(a: Analysis) -> list[str]:
    """The 2^k factorial's main effects and interactions."""
    if not a.effects:
        return []
    m = a.primary
    levels = {f: [format_value(f, v) for v in _levels(a, f)] for f in a.effects_factors}
    scale = {"logit": "logit", "log": "log"}.get(m.interval_scale, "")
    tested = (
        f"tested on the {scale} scale the intervals use (the same contrast of the cells' mean {scale}s)"
        if scale
        else "tested on the values"
    )
    lines = [
        "## Main effects and interactions",
        "",
        f"The grid is a full 2^{len(a.effects_factors)} factorial, so each factor's effect on {m.label} is estimated over "
        "all the others (not only conditionally, as the pairs above): a main effect is the mean at the high level "
        "minus the mean at the low level, averaged over the other factors' levels; an interaction is the "
        "difference between the effect of one factor at the two levels of another, halved (the usual 2^k "
        f"effect, twice the coefficient of a +-1 coded regression). Estimates and 95% t intervals in "
        f"{'percentage points' if m.kind == 'acc' else 'the metric' + chr(39) + 's units'}, from the pooled "
        f"within-configuration variance ({a.effects[0].df} degrees of freedom); p {tested}, and Holm's "
        f"correction over the {len(a.effects)} terms; * Holm p < {ALPHA}.",
        "",
        f"| term | levels (low → high) | effect ({'pp' if m.kind == 'acc' else m.label}) | 95% CI | p | Holm p |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for e in a.effects:
        name = " × ".join(FACTOR_LABELS.get(f, f) for f in e.term)
        lv = "; ".join(f"{' → '.join(levels[f])}" for f in e.term)
        sc = m.scale
        lines.append(
            f"| {name} | {lv} | {sc(e.estimate):+.3f} | [{sc(e.ci_low):+.3f}, {sc(e.ci_high):+.3f}] | "
            f"{_num(e.t_pvalue, '.2g')} | {_num(e.holm_p, '.2g')}{' *' if e.holm_p < ALPHA else ''} |"
        )
    if a.simple_effects:
        lines += [
            "",
            "Simple effects: where two factors interact significantly, the main effect of either averages "
            "effects that differ, so each is given within each level of the other (averaged over the remaining "
            f"factors; tested as above, Holm over these {len(a.simple_effects)}).",
            "",
            f"| factor | within | effect ({'pp' if m.kind == 'acc' else m.label}) | 95% CI | p | Holm p |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for s_ in a.simple_effects:
            e = s_.effect
            sc = m.scale
            lines.append(
                f"| {FACTOR_LABELS.get(s_.factor, s_.factor)} ({' → '.join(levels[s_.factor])}) | "
                f"{FACTOR_LABELS.get(s_.within, s_.within)} {format_value(s_.within, s_.level)} | "
                f"{sc(e.estimate):+.3f} | [{sc(e.ci_low):+.3f}, {sc(e.ci_high):+.3f}] | "
                f"{_num(e.t_pvalue, '.2g')} | {_num(e.holm_p, '.2g')}{' *' if e.holm_p < ALPHA else ''} |"
            )
    return lines + [""]


def _levels(a: Analysis, factor: str) -> list:
    return factor_levels(a.study, factor)


def _section_timing(a: Analysis) -> list[str]:
    """Training time as measured: chunks' wall time, never per-run intervals (hardware-dependent)."""
    if not a.timing:
        return []
    lines = [
        "## Training time (hardware-dependent)",
        "",
        "What was measured: the wall time of each chunk of runs trained together (chunk width: runs per "
        "vmapped program), divided by the runs in it, and the model-steps per second that gives (mini-batch "
        "steps of one run times the runs of the chunk, per second of chunk wall time). Runs of one chunk share "
        'one clock, so there is no per-run interval and no "best"; chunk width depends on the batch size and '
        "the network, so time per run confounds the two. Medians over the configuration's runs. The runs were "
        "timed on a machine shared with other jobs, so these are upper bounds, and a paper's times come from "
        "other hardware: neither is a comparison of speed.",
        "",
        "| configuration | runs | chunk width | seconds / run | model-steps / s |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in a.timing:
        lines.append(
            f"| {_md_escape(trial_label(a.row(t.trial_id).trial))} | {t.runs} | {t.chunk_width} | "
            f"{t.seconds_per_run:.3g} | {t.model_steps_per_s:,.0f} |"
        )
    if len(a.timing) > 12:
        lines = (
            lines[:4]
            + ["<details><summary>" + f"{len(a.timing)} configurations" + "</summary>", ""]
            + lines[4:]
            + ["", "</details>"]
        )
    return lines + [""]


def _section_figures(figures: Sequence[tuple[str, str]]) -> list[str]:
    lines = ["## Figures", ""]
    for stem, caption in figures:
        lines += [
            f"![{_md_escape(caption)}](figures/{stem}.png)",
            "",
            f"{caption} ([PDF](figures/{stem}.pdf), [SVG](figures/{stem}.svg))",
            "",
        ]
    return lines


def _section_regenerate(a: Analysis, results_arg: str) -> list[str]:
    return [
        "## Regenerate",
        "",
        "```",
        f"hpstudy report {a.study.name} --results {results_arg}",
        "```",
        "",
        "The same stored runs give byte-identical files.",
        "",
    ]


def readme(a: Analysis, table_md: str, figures: Sequence[tuple[str, str]], results_arg: str) -> str:
    """The report's README.md text, section by section."""
    lines = (
        _section_header(a)
        + _section_summary(a)
        + _section_runs(a)
        + _section_assumptions(a)
        + _section_results(a, table_md)
        + ["## Published numbers against the seeds", ""]
        + _verdict_table(a)
        + [""]
        + _outside_reasons(a)
        + _section_sensitivity(a)
        + _section_curves_meet(a)
        + _section_comparisons(a)
        + testset_report.section(a, trial_label)
        + _section_effects(a)
        + _section_contrast(a)
        + [a.add_seeds, ""]
        + _section_timing(a)
        + _section_figures(figures)
        + _section_regenerate(a, results_arg)
    )
    return "\n".join(lines)
