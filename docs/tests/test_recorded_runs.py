"""The result figures the docs print: each is the figure of a recorded run, and a rerun stays
within the band the docs state.

``recorded_runs.toml`` beside this file is the one list of those figures: per example, the
command's overrides, the figures of the run recorded on the CPU it names, the band a rerun on
any CPU must stay within, and the text each page shows them in (a template formatted with the
figures). Training is not bit-reproducible across CPUs: torch's kernels differ in float rounding
by CPU, vector width and thread count, and Adam turns rounding-level gradient differences into
step-size weight differences (see docs/cl/main-experiment.md, "Results across CPUs"); the bands
are measured, not guessed.

The reruns are slow (seven examples of 10-20 s each on an idle 2-core machine) and marked so;
each example runs once per session, and the output-tree check reuses the main example's run.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

from clarena.experiments.running import results

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
RECORDED = tomllib.loads((Path(__file__).with_name("recorded_runs.toml")).read_text("utf-8"))
RUNS: dict[str, dict[str, Any]] = RECORDED["runs"]


def figures(run: dict[str, Any]) -> dict[str, Any]:
    """The recorded figures of ``run`` by name; with a recorded matrix also ``acc`` (row ``i``,
    task ``j``), ``average`` (of row ``i``) and ``acc_csv`` (the matrix as ``acc.csv`` text).
    """
    values = dict(run["figures"])
    if "acc" in run:
        rows = _rows(run["acc"])
        values["acc"] = rows
        values["average"] = {t: results.average(row) for t, row in rows.items()}
        values["acc_csv"] = _csv_text(rows)
    return values


def _rows(matrix: list[list[float]]) -> dict[int, dict[int, float]]:
    return {i: {j: a for j, a in enumerate(row, start=1)} for i, row in enumerate(matrix, start=1)}


def _csv_text(rows: dict[int, dict[int, float]]) -> str:
    folder = Path(tempfile.mkdtemp(prefix="clarena-recorded-"))
    try:
        path = folder / "acc.csv"
        results.write_accuracy_csv(path, rows, list(rows))
        return path.read_text(encoding="utf-8").rstrip("\n")
    finally:
        shutil.rmtree(folder)


def shown(name: str) -> list[tuple[str, str]]:
    """``(page, text)`` of every place the docs show ``name``'s figures."""
    values = figures(RUNS[name])
    return [
        (page, template.format(**values))
        for page, templates in RUNS[name]["shown"].items()
        for template in ([templates] if isinstance(templates, str) else templates)
    ]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_docs_show_the_recorded_figures(name: str) -> None:
    for page, text in shown(name):
        content = (DOCS / page).read_text(encoding="utf-8")
        assert text in content, f"docs/{page} should show {name}'s recorded figures as:\n{text}"


_NOT_RESULTS = re.compile(r"<!-- not results:.*?<!-- /not results -->", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`]*`")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_FIGURE = re.compile(r"(?<![\w.])[-+]?0\.\d{3,}")


def prose_and_output(content: str) -> list[str]:
    """The lines of a page outside fenced code, and inside ``text`` fences (printed output)."""
    kept: list[str] = []
    fence: str | None = None
    for line in content.splitlines():
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence = stripped[3:].split(" ", 1)[0] or "text"
        elif fence is not None and stripped == "```":
            fence = None
        elif fence in (None, "text"):
            kept.append(line)
    return kept


def test_every_result_figure_of_these_pages_is_recorded() -> None:
    """A figure with three or more decimals on a page with recorded runs is a recorded one.

    Not counted: code (configs, commands, Python), inline code, comments, and the parts marked
    ``<!-- not results: WHY -->`` ... ``<!-- /not results -->``: measurements that say on what
    CPU and setting they were taken, or figures that are settings.
    """
    for page in sorted({page for run in RUNS.values() for page in run["shown"]}):
        content = (DOCS / page).read_text(encoding="utf-8")
        for name in RUNS:
            for where, text in shown(name):
                if where == page:
                    content = content.replace(text, "")
        content = _NOT_RESULTS.sub("", content)
        text = _INLINE_CODE.sub("", _COMMENT.sub("", "\n".join(prose_and_output(content))))
        unrecorded = [line.strip() for line in text.splitlines() if _FIGURE.search(line)]
        assert not unrecorded, (
            f"docs/{page} prints figures recorded_runs.toml does not hold: {unrecorded}"
        )


@functools.cache
def rerun(name: str) -> dict[str, Any]:
    """Run ``name``'s overrides once (in-process, quiet outputs off); its summary and matrix."""
    from clarena.experiments import cli

    folder = Path(tempfile.mkdtemp(prefix=f"clarena-rerun-{name}-"))
    try:
        cli.main([*RUNS[name]["overrides"], f"output_dir={folder / 'run'}"])
        run_dir = folder / "run"
        summary = json.loads((run_dir / "results" / "summary.json").read_text())
        matrix = results.read_accuracy_csv(run_dir / "results" / "acc.csv")
        files = sorted(
            path.relative_to(run_dir).as_posix() for path in run_dir.rglob("*") if path.is_file()
        )
    finally:
        shutil.rmtree(folder)
    return {"summary": summary, "acc": matrix, "files": files}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_rerun_stays_within_the_documented_band(name: str) -> None:
    run = RUNS[name]
    measured = rerun(name)
    summary = measured["summary"]
    for key, recorded in run["figures"].items():
        if key.startswith("final_task_"):
            value = summary["final_accuracy_per_task"][key.removeprefix("final_task_")]
        else:
            value = summary[key]
        assert abs(value - recorded) <= run["band"], (
            f"{name}: {key} {value:.4f}, recorded {recorded:.4f} +- {run['band']} "
            f"({RECORDED['cpu']})"
        )
    if "acc" in run:
        # Accuracy right after learning each task is not chaotic: a tight band.
        for task, row in _rows(run["acc"]).items():
            after = measured["acc"][task][task]
            assert abs(after - row[task]) <= run["learned_band"], (
                f"{name}: task {task} right after learning it {after:.4f}, recorded "
                f"{row[task]:.4f} +- {run['learned_band']}"
            )


@pytest.mark.slow
def test_the_documented_output_lists_name_every_file_the_main_example_writes() -> None:
    """docs/cl/output-results.md's tree and the README's list name what a run writes."""
    files = rerun("main")["files"]
    page = (DOCS / "cl" / "output-results.md").read_text(encoding="utf-8")
    tree = page[page.index("outputs/example_clmain_train/") :]
    tree = tree[: tree.index("```")]
    names = set(re.findall(r"[├└]── (\S+)", tree))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for file in files:
        top, _, rest = file.partition("/")
        assert (f"{top}/" if rest else top) in names, f"output-results.md does not list {top}"
        if top in ("results", "checkpoints"):
            assert Path(rest).name in names, f"output-results.md does not list {file}"
            assert Path(rest).name in readme, f"README.md does not list {file}"
