from __future__ import annotations

from pathlib import Path

import pytest

from clarena.experiments.running import results

ROWS = {1: {1: 0.9}, 2: {1: 0.7, 2: 0.8}, 3: {1: 0.6, 2: 0.85, 3: 0.5}}


def test_backward_transfer_and_forgetting() -> None:
    assert results.backward_transfer(ROWS) == pytest.approx(((0.6 - 0.9) + (0.85 - 0.8)) / 2)
    assert results.forgetting(ROWS) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.85)) / 2)
    assert results.backward_transfer({1: {1: 0.5}}) is None
    assert results.forgetting({1: {1: 0.5}}) is None


def test_accuracy_csv_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "acc.csv"
    rows = {1: {1: 1 / 3}, 2: {1: 2 / 7, 2: 0.1 + 0.2}}
    results.write_accuracy_csv(path, rows, [1, 2])
    lines = path.read_text().splitlines()
    assert lines[0] == "after_training_task,average_accuracy,test_on_task_1,test_on_task_2"
    assert lines[1].endswith(",")
    assert results.read_accuracy_csv(path) == rows


def test_plots_are_png_files(tmp_path: Path) -> None:
    results.plot_accuracy_matrix(tmp_path / "m.png", ROWS, [1, 2, 3])
    results.plot_average_accuracy(tmp_path / "a.png", ROWS)
    for name in ("m.png", "a.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_name_the_run_and_numbers_on_dark_cells_are_white(tmp_path: Path) -> None:
    title = results.run_title(
        "Finetuning", "clarena.backbones.CLResNet18", {"sequence": "split", "source": "digits"}
    )
    assert title == "Finetuning · CLResNet18 · split digits"
    rows = {1: {1: 0.95}, 2: {1: 0.10, 2: 0.90}}
    figure = results.plot_accuracy_matrix(tmp_path / "matrix.png", rows, [1, 2], title=title)
    axes = figure.axes[0]
    assert axes.get_title() == title
    colors = {text.get_text(): text.get_color() for text in axes.texts}
    assert colors == {"0.95": "white", "0.10": "black", "0.90": "white"}
    average = results.plot_average_accuracy(tmp_path / "average.png", rows, title=title)
    assert average.axes[0].get_title() == title


def test_a_one_row_average_accuracy_plot_is_a_labelled_bar(tmp_path: Path) -> None:
    from matplotlib.patches import Rectangle

    figure = results.plot_average_accuracy(tmp_path / "one.png", {3: {1: 0.5, 2: 1.0}})
    axes = figure.axes[0]
    bars = [patch for patch in axes.patches if isinstance(patch, Rectangle)]
    assert [(bar.get_x() + bar.get_width() / 2, bar.get_height()) for bar in bars] == [(3, 0.75)]
    assert [text.get_text() for text in axes.texts] == ["0.7500"]
    assert not axes.lines


@pytest.mark.slow
def test_an_evaluation_titles_its_plots_with_the_saved_models_backbone_and_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clarena.experiments import cli
    from clarena.experiments.testing import quick_run_overrides

    monkeypatch.chdir(tmp_path)
    titles: list[str | None] = []
    for name in ("plot_accuracy_matrix", "plot_average_accuracy"):
        plot = getattr(results, name)
        monkeypatch.setattr(
            results,
            name,
            lambda *args, plot=plot, **kwargs: (
                titles.append(kwargs.get("title")) or plot(*args, **kwargs)
            ),
        )
    overrides = quick_run_overrides(train_tasks=1, save_model=True)
    cli.main(["experiment=example_clmain_train", f"output_dir={tmp_path / 'train'}", *overrides])
    model = tmp_path / "train" / "saved_model.pt"
    cli.main(
        [
            "experiment=example_clmain_eval",
            f"model_path={model}",
            f"output_dir={tmp_path / 'eval'}",
            "callbacks=none",
        ]
    )
    # The evaluation's own config names no backbone or dataset; the title comes from the model's.
    assert titles == ["Finetuning · CLMLP · permuted digits"] * 2
    assert (tmp_path / "eval" / "results" / "acc_matrix.png").is_file()
