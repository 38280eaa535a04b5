"""The report's README.md, written section by section from an Analysis (pure: returns text)."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Sequence

import pandas as pd

from hpstudy.analysis import (
    ALPHA,
    HISTORY_OF,
    HISTORY_OF_TEST,
    Analysis,
    Comparison,
    describe_seeds,
    epoch_means,
    metric_of,
    trial_label,
    training_length_hint,
)

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
            f"XLA_FLAGS {env.get('xla_flags') or '(unset)'}; x64 {env.get('x64', '?')}; {env.get('platform', '?')}"
        )
    return lines


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(x: float, fmt: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _verdict_table(a: Analysis) -> list[str]:
    if not a.verdicts:
        return ["The study file records no published numbers."]
    lines = [
        "| source | configuration | metric | published | seeds: mean (sd) | 95% prediction interval | z | percentile | n | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    inside = total = timed = 0
    previous = None
    for v in a.verdicts:
        m = metric_of(v.metric)
        pub = f"{m.scale(v.published):.2f}" if m.kind == "acc" else f"{v.published:.4g}"
        p = v.placement
        if p is None:
            verdict = v.against if v.against.startswith("no stored") else ("not placed" if v.note else "no runs")
            cells = ["n/a"] * 4
        else:
            sc = m.scale
            spread = f"{sc(p.mean):.2f} ({_num(sc(p.std), '.2g')})" if m.kind == "acc" else f"{p.mean:.4g} ({_num(p.std, '.2g')})"
            pi = "n/a"
            if math.isfinite(p.pi_low):
                pi = (f"[{sc(p.pi_low):.2f}, {sc(p.pi_high):.2f}]" if m.kind == "acc"
                      else f"[{p.pi_low:.4g}, {p.pi_high:.4g}]")
            if p.verdict == "too few seeds":
                verdict = "too few seeds"
            else:
                verdict = ("**inside**" if p.inside else "**outside**") + f" ({p.verdict})"
                if m.kind == "time":
                    timed += 1
                else:
                    total += 1
                    inside += p.inside
            cells = [spread, pi, _num(p.z, "+.2f"), f"{p.percentile:.1f}"]
        notes = [x for x in (v.note,) if x]
        if v.against and v.n:
            notes.insert(0, f"against the {v.against}")
        if notes:
            verdict += "; " + "; ".join(notes)
        same = previous == (v.source, v.where)
        previous = (v.source, v.where)
        lines.append(
            f"| {'' if same else _md_escape(v.source)} | {'' if same else _md_escape(v.where)} | {m.label} | {pub} | "
            + " | ".join(cells) + f" | {v.n} | {_md_escape(verdict)} |"
        )
    lines += ["", f"**{inside} of {total}** published accuracies and losses fall inside the seeds' 95% prediction "
              "interval for one new run (Student t with n - 1 degrees of freedom): a value outside it is unlikely "
              "to be one more run of the same configuration. z is (published - mean) / sd; the percentile is the "
              "published value's rank among the seeds' values."
              + (f" The {timed} training times are listed for reference only: they depend on the hardware." if timed else "")]
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
        if p is None or p.inside or p.verdict == "too few seeds" or not v.trial_id or v.metric not in mapping:
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
        fmt = (lambda x: f"{m.scale(x):.2f}") if m.kind == "acc" else (lambda x: f"{x:.4g}")
        fact = (f"{m.label} published {fmt(v.published)}, seeds {fmt(p.mean)} at the end and "
                f"{fmt(means[epoch - 1][0])} after epoch {epoch} of {len(means)}")
        rows.setdefault((v.source, v.where), []).append((fact, reading))
    if not rows:
        return []
    lines = ["### Outside the prediction interval: likely reasons", "",
             "Where each published accuracy or loss outside the interval meets the seeds' mean learning curve "
             "(validation metrics per epoch; test metrics too where the validation set is the test set), and "
             "what that suggests. Read from the data: a hypothesis to check, not a proof.", ""]
    for (source, where), items in rows.items():
        readings = list(dict.fromkeys(r for _, r in items))
        if len(readings) == 1:
            text = "; ".join(f for f, _ in items) + f". {readings[0][0].upper() + readings[0][1:]}."
        else:
            text = "; ".join(f"{f} ({r})" for f, r in items) + "."
        lines.append(f"- {_md_escape(source)} ({_md_escape(where)}): {_md_escape(text)}")
    return lines + [""]


def _comparison_table(a: Analysis, comps: Sequence[Comparison]) -> list[str]:
    m = a.primary
    lines = [
        f"| a | b | common seeds | mean a - b ({'pp' if m.kind == 'acc' else m.label}) | 95% CI | paired t p | Holm p | Wilcoxon p | P(a > b) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in comps:
        r = c.result
        sc = m.scale
        lines.append(
            f"| {_md_escape(trial_label(a.row(c.a).trial))} | {_md_escape(trial_label(a.row(c.b).trial))} | {r.n} | "
            f"{sc(r.mean_diff):+.3f} | [{_num(sc(r.ci_low), '+.3f')}, {_num(sc(r.ci_high), '+.3f')}] | "
            f"{_num(r.t_pvalue, '.3g')} | {_num(c.holm_p, '.3g')}{' *' if c.holm_p < ALPHA else ''} | "
            f"{_num(r.wilcoxon_pvalue, '.3g')} | {r.prob_improvement:.2f} |"
        )
    if len(comps) > 12:
        lines = ["<details><summary>" + f"{len(comps)} comparisons" + "</summary>", "", *lines, "", "</details>"]
    return lines


def readme(a: Analysis, table_md: str, figures: Sequence[tuple[str, str]], results_arg: str) -> str:
    """The report's README.md text."""
    s, runs, meta = a.study, a.runs, a.study.meta
    seeds = sorted({int(x) for x in runs["seed"]})
    counts = Counter(r.cells[a.primary.column].n + r.cells[a.primary.column].n_nonfinite for r in a.rows)
    lines = [f"# {meta.get('title', s.name)}", ""]
    if meta.get("authors"):
        lines.append(f"Authors: {', '.join(meta['authors'])}" + (f" ({meta['year']})" if meta.get("year") else "") + ".")
    if meta.get("citation"):
        lines.append(f"Citation: {meta['citation']}")
    for key in ("doi", "url"):
        if meta.get(key):
            lines.append(f"{key.upper()}: {meta[key]}")
    lines += ["", f"Study `{s.name}` ({s.design_kind} design, {len(s.trials)} configurations), study file "
              f"`{s.path.name}` (sha256 `{s.sha256[:16]}`)." + (f" {meta['description']}" if meta.get("description") else ""), ""]
    lines += ["## Runs", ""]
    if len(counts) == 1:
        per = f"{next(iter(counts))} seeds for each of the {len(a.rows)} configurations"
    else:
        per = "; ".join(f"{n} seeds for {c} configuration{'s' if c > 1 else ''}" for n, c in sorted(counts.items(), reverse=True))
    lines.append(f"- Runs: {len(runs)}; seeds {describe_seeds(seeds)} ({per}).")
    validation = str(meta.get("validation", "test"))
    lines.append("- Validation data: " + {
        "test": "the test set (as Keras' validation_data=(x_test, y_test)): validation metrics are test metrics.",
        "none": "none (no validation metrics).",
    }.get(validation, f"the last {validation.partition(':')[2]} training images, held out from training."))
    ignored = runs.attrs.get("ignored", 0)
    if ignored:
        lines.append(f"- {ignored} other stored runs (other seeds, or configurations the study file no longer describes) are not used.")
    shas = sorted(set(str(x) for x in runs["study_sha256"]))
    if shas != [s.sha256]:
        lines.append(f"- Runs were stored under study file versions {', '.join(f'`{x[:16]}`' for x in shas)}; "
                     "their configurations are the current file's (matched by run id).")
    fps = Counter(str(x) for x in runs["dataset_fingerprint"])
    lines.append("- Dataset fingerprint: " + "; ".join(f"`{k}`" + (f" ({c} runs)" if len(fps) > 1 else "")
                                                       for k, c in sorted(fps.items())))
    widths = Counter(int(w) for w in runs["chunk_width"])
    lines.append("- Chunk widths (runs trained together in one vmapped program; part of a result's identity): "
                 + ", ".join(f"{w} ({c} runs)" for w, c in sorted(widths.items())) + ".")
    compile_s = runs.drop_duplicates(["group_id", "chunk_width", "compile_seconds"])["compile_seconds"].sum()
    lines.append(f"- Training time: {float(runs['seconds'].sum()):.1f} s over all runs (a run's seconds are its "
                 f"chunk's wall time divided by the chunk's runs), plus {float(compile_s):.1f} s compiling.")
    lines.append("- Environment:")
    lines += ["  " + e for e in _environment_lines(runs)]
    lines += ["", "## Assumptions", ""]
    if s.assumptions:
        lines += ["| setting | value | why |", "|---|---|---|"]
        lines += [f"| `{_md_escape(x.get('key', ''))}` | {_md_escape(x.get('value', ''))} | {_md_escape(x.get('why', ''))} |"
                  for x in s.assumptions]
    else:
        lines.append("The study file records no assumptions.")
    lines += ["", "## Results", "",
              f"Mean over seeds ± half-width of the 95% confidence interval of the mean (Student t); bold: best in "
              f"its column; \"pub.\" is the paper's single-run value; n/a: one seed, no interval. Also as "
              f"[table.csv](table.csv) (every number, with standard deviations, prediction intervals and a "
              f"bootstrap CI of {a.primary.label}) and [table.tex](table.tex) (booktabs).", "", table_md.rstrip(), ""]
    lines += ["## Published numbers against the seeds", ""] + _verdict_table(a) + [""] + _outside_reasons(a)
    lines += ["## Comparisons", "", f"On {a.primary.label}, paired on common seeds (differences a - b), Holm-corrected "
              "within each family (on the paired t-test p); * marks Holm p < 0.05. P(a > b) is the probability "
              "that a run of a beats a run of b.", ""]
    if a.best_vs_rest:
        lines += ["### Best configuration against the others", ""] + _comparison_table(a, a.best_vs_rest) + [""]
    if a.factor_effects:
        lines += ["### One factor at a time", "", "Pairs of configurations that differ in one factor only "
                  "(a: the later level; numeric factors compare neighbouring levels)." , ""] + _comparison_table(a, a.factor_effects) + [""]
    if a.factor_note:
        lines += [a.factor_note, ""]
    if not a.best_vs_rest and not a.factor_effects:
        lines += ["No comparison possible: configurations need at least 2 common seeds.", ""]
    lines += [a.add_seeds, ""]
    lines += ["## Figures", ""]
    for stem, caption in figures:
        lines += [f"![{_md_escape(caption)}](figures/{stem}.png)", "",
                  f"{caption} ([PDF](figures/{stem}.pdf), [SVG](figures/{stem}.svg))", ""]
    lines += ["## Regenerate", "", "```", f"hpstudy report {s.name} --results {results_arg}", "```", "",
              "The same stored runs give byte-identical files.", ""]
    return "\n".join(lines)

