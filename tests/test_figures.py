"""Figure files: SVG ids independent of float noise, split learning-rate axis, deterministic output."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib as mpl
import pytest
from matplotlib.figure import Figure

from hpstudy.reporting import figures


def _figure(offset: float) -> Figure:
    """A small figure whose axes sit `offset` (a fraction of the figure) higher: noise far below what the
    SVG prints, but inside the clip-path coordinates matplotlib hashes into its ids."""
    fig = Figure(figsize=(3, 2))
    ax = fig.add_axes((0.15, 0.15 + offset, 0.8, 0.75))
    ax.plot([1, 2, 3], [0.97, 0.975, 0.972], marker="o")
    ax.scatter([1, 2], [0.971, 0.973])
    return fig


def _svg(fig: Figure, tmp_path, name: str, stable: bool) -> str:
    with mpl.rc_context(figures.STYLE):
        if stable:
            (tmp_path / name).mkdir()
            figures.save(fig, tmp_path / name, "f")
            return (tmp_path / name / "f.svg").read_text()
        import io

        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata=figures.METADATA["svg"])
        return buf.getvalue()


def test_svg_ids_do_not_depend_on_float_noise(tmp_path):
    raw_a, raw_b = _svg(_figure(0.0), tmp_path, "a", False), _svg(_figure(1e-13), tmp_path, "b", False)
    assert raw_a != raw_b, "matplotlib's own ids change with last-bit noise (what the renumbering removes)"
    assert re.sub(r'"[pm][0-9a-f]{10}"', "", raw_a) != raw_a
    a, b = _svg(_figure(0.0), tmp_path, "c", True), _svg(_figure(1e-13), tmp_path, "d", True)
    assert a == b
    assert 'id="p0000000001"' in a and "url(#p0000000001)" in a


def test_stable_svg_ids_renumber_in_order_and_keep_references():
    text = (
        '<clipPath id="p0123456789"/><path id="m9876543210"/><use xlink:href="#m9876543210"/>'
        '<g clip-path="url(#p0123456789)"/><clipPath id="pabcdefabcd"/><g id="patch_1"/><text>p0000000000a</text>'
    )
    out = figures.stable_svg_ids(text)
    assert out == (
        '<clipPath id="p0000000001"/><path id="m0000000001"/><use xlink:href="#m0000000001"/>'
        '<g clip-path="url(#p0000000001)"/><clipPath id="p0000000002"/><g id="patch_1"/>'
        "<text>p0000000000a</text>"
    )
    assert figures.stable_svg_ids(out) == out


def test_split_learning_rate_axis_is_log_below_one_and_linear_above():
    """Below 1 each decade is one unit, from 1 each unit of learning rate: 1-5 spread as wide as 0.001-0.1."""
    axis = figures.Axis("learning_rate", [0.001, 0.01, 0.1, 1, 2, 3, 4, 5])
    assert axis.kind == "split"
    pos = [axis(v) for v in (0.001, 0.01, 0.1, 1, 2, 3, 4, 5)]
    assert [round(b - a, 12) for a, b in zip(pos, pos[1:])] == [1.0] * 7
    assert pos[1] - pos[0] == math.log10(0.01) - math.log10(0.001)
    assert figures.Axis("learning_rate", [0.001, 0.01, 0.1]).kind == "log"
    assert figures.Axis("batch_size", [25, 50, 75, 100]).kind == "linear"


STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_study_reports_byte_identically_twice(path, tmp_path):
    """`hpstudy report` works for every shipped study file (synthetic runs, 3 seeds) and regenerates the
    same bytes; every figure the README names exists."""
    from hpstudy import store
    from hpstudy.reporting.build import synthetic_records, write_report
    from hpstudy.study import load_study

    study = load_study(path)
    results = tmp_path / "results"
    store.write_chunk(store.study_dir(results, study.name), synthetic_records(study, range(3)))
    first, second = write_report(study, results, tmp_path / "a"), write_report(study, results, tmp_path / "b")
    files = {p.relative_to(first).as_posix(): p.read_bytes() for p in sorted(first.rglob("*")) if p.is_file()}
    assert files == {p.relative_to(second).as_posix(): p.read_bytes() for p in sorted(second.rglob("*")) if p.is_file()}
    readme = files["README.md"].decode()
    for stem in re.findall(r"\]\(figures/([\w.-]+)\.png\)", readme):
        assert all(f"figures/{stem}.{ext}" in files for ext in ("pdf", "svg", "png"))
    assert "learning_curves" in readme


def test_large_search_report_caps_the_strip_plot_and_rasterizes_dense_panels(tmp_path):
    """A random search of 300 trials x 20 seeds: the seeds figure shows the 80 best trials, best first, and
    says so; panels of over DENSE_POINTS markers embed them as an image in the SVG, small ones stay vector."""
    from hpstudy import store
    from hpstudy.reporting.analysis import analyze
    from hpstudy.reporting.build import load_runs, synthetic_records
    from hpstudy.study import load_study

    text = (Path(__file__).resolve().parent.parent / "studies" / "vallepalli2024_search.toml").read_text()
    path = tmp_path / "vallepalli2024_search.toml"
    path.write_text(re.sub(r"(?m)^trials\s*=\s*\d+", "trials = 300", text))
    study = load_study(path)
    assert len(study.trials) == 300
    results = tmp_path / "results"
    store.write_chunk(store.study_dir(results, study.name), synthetic_records(study, range(20)))
    a = analyze(study, load_runs(study, results, None))
    shown = figures.strip_rows(a)
    assert len(shown) == figures.MAX_STRIP_ROWS
    means = [r.cells[a.primary.column].summary.mean * a.primary.better for r in shown]
    assert means == sorted(means, reverse=True)
    assert min(means) >= max(
        r.cells[a.primary.column].summary.mean * a.primary.better for r in a.rows if r not in shown
    )
    captions = dict((stem, caption) for stem, caption, _ in figures.plan(a))
    assert f"the {figures.MAX_STRIP_ROWS} best of the 300 configurations" in captions["seeds"]
    with mpl.rc_context(figures.STYLE):
        for stem, _, build in figures.plan(a):
            figures.save(build(a), tmp_path, stem)
    assert 300 * 20 > figures.DENSE_POINTS
    for stem in ("score_vs_hyperparameters", "best_so_far"):
        assert "<image" in (tmp_path / f"{stem}.svg").read_text(), stem
    assert "<image" not in (tmp_path / "seeds.svg").read_text()  # 80 x 20 markers: vector
    seeds_svg = (tmp_path / "seeds.svg").read_text()
    assert seeds_svg.count("trial-") == figures.MAX_STRIP_ROWS
