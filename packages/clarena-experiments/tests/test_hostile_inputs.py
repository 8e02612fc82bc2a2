"""Hostile commands end to end: each exits 1 with one line naming the problem, writing nothing.

Every case runs the ``clarena`` command in-process (its ``main`` with ``SystemExit`` captured) and
must fail before any training: Hydra's own ``.hydra/`` and job log are all the run dir may hold
(no ``results/``, no ``saved_model.pt``, no resume state, no Lightning logs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clarena.experiments import cli

Run = Callable[..., Path]

#: What Hydra writes before the job starts; nothing else may be left behind.
HYDRA_FILES = {".hydra", "clarena.log"}

GARBAGE_ROOT = "{garbage_root}"

CASES: list[tuple[str, list[str], str]] = [
    ("example_clmain_train", ["trainer.max_epochs=-1"], "-1 would train forever"),
    ("example_clmain_train", ["trainer.max_epochs=0"], "0 would train nothing"),
    ("example_stl_train", ["trainer.max_epochs=0"], "trainer.max_epochs must be a positive"),
    ("example_mtl_train", ["+trainer.max_steps=0"], "trainer.max_steps must be -1"),
    (
        "example_clmain_train",
        ["optimizer.lr=-1"],
        "optimizer cannot be built from its config: Invalid learning rate: -1",
    ),
    ("example_stl_train", ["+optimizer.betas=1"], "optimizer cannot be built from its config"),
    ("example_clmain_train", ["train_tasks=[1,2,2]"], "train_tasks names tasks [2] more than once"),
    ("example_clmain_train", ["train_tasks=0"], "train_tasks must be a task count >= 1"),
    ("example_clmain_train", ["train_tasks=[]"], "a non-empty list of task ids"),
    ("example_clmain_train", ["train_tasks=[0,1]"], "train_tasks names tasks [0]"),
    ("example_clmain_train", ["train_tasks=9"], "but the dataset has tasks 1..5"),
    (
        "example_clmain_eval",
        ["model_path=/nonexistent/saved_model.pt", "eval_tasks=[1,1]"],
        "eval_tasks names tasks [1] more than once",
    ),
    (
        "example_clmain_eval",
        ["model_path=/nonexistent/saved_model.pt", "eval_tasks=0"],
        "eval_tasks must be a task count >= 1",
    ),
    (
        "example_clmain_train",
        ["cl_dataset=split_digits", "cl_dataset.class_split=null", "+cl_dataset.num_tasks=3"],
        "num_tasks=3 does not divide the source's 10 classes",
    ),
    (
        "example_clmain_train",
        ["cl_dataset=split_digits", "cl_dataset.class_split=null", "+cl_dataset.num_tasks=20"],
        "use num_tasks in [1, 2, 5, 10]",
    ),
    (
        "example_clmain_train",
        ["cl_dataset=split_digits", "+cl_dataset.num_tasks=8"],
        "num_tasks=8 but class_split has 5 groups",
    ),
    (
        "example_clmain_train",
        ["backbone=hatmaskmlp"],
        "Finetuning trains a plain continual-learning backbone, but mask method 'hat' is "
        "attached to",
    ),
    (
        "example_clmain_train",
        ["cl_algorithm=independent", "backbone=wsnmaskmlp"],
        "Independent trains a plain continual-learning backbone, but mask method 'wsn' is "
        "attached to",
    ),
    (
        "example_stl_train",
        ["backbone=clmlp"],
        "SingleLearning trains one plain backbone; CLMLP is a continual-learning backbone",
    ),
    (
        "example_mtl_train",
        ["backbone=hatmaskmlp"],
        "JointLearning trains one plain backbone; CLMLP is a continual-learning backbone",
    ),
    (
        "example_clmain_adahat",
        ["cl_algorithm.aggregation=median"],
        "AdaHAT: aggregation must be one of 'min', 'max', 'mean'; got 'median'",
    ),
    (
        "example_clmain_adahat",
        ["cl_algorithm.adjustment_intensity=-0.5"],
        "AdaHAT: adjustment_intensity must be a number > 0; got -0.5",
    ),
    ("example_clmain_hat", ["cl_algorithm.s_max=0"], "HAT: s_max must be a number > 0"),
    (
        "example_clmain_hat",
        ["cl_algorithm.task_embedding_init_mode=zeros"],
        "task_embedding_init_mode must be one of",
    ),
    (
        "example_clmain_wsn",
        ["cl_algorithm.parameter_score_init_mode=zeros"],
        "parameter_score_init_mode must be one of",
    ),
    (
        "example_clmain_train",
        ["cl_dataset=permuted_mnist", f"cl_dataset.root={GARBAGE_ROOT}"],
        "is not an idx file",
    ),
    (
        "example_clmain_train",
        ["cl_dataset.batch_size=0"],
        "clarena: ValueError (while building config key 'cl_dataset'): CLDataModule: batch_size "
        "must be an integer >= 1 (samples per training batch, e.g. batch_size=64); got 0.",
    ),
    (
        "example_mtl_train",
        ["mtl_dataset.eval_batch_size=0"],
        "(while building config key 'mtl_dataset'): MTLDataModule: eval_batch_size must be",
    ),
    (
        "example_clmain_train",
        ["global_seed=abc"],
        "clarena: PipelineConfigError: global_seed must be an integer from 0 to 4294967295; got "
        "'abc'. Set global_seed=1 (or another integer in that range).",
    ),
    (
        "example_stl_train",
        ["num_threads=-1"],
        "clarena: PipelineConfigError: num_threads must be null (torch's default) or a number of "
        "threads >= 1; got -1. Set num_threads=1, or num_threads=null.",
    ),
    (
        "example_clmain_eval",
        ["model_path=/nonexistent/saved_model.pt", "num_threads=0"],
        "num_threads must be null (torch's default) or a number of threads >= 1; got 0.",
    ),
    # Boolean keys: bool("no") is True, so only true/false pass.
    (
        "example_clmain_train",
        ["overwrite=no"],
        "overwrite must be true or false (unquoted); got 'no'",
    ),
    ("example_stl_train", ["compile=1"], "compile must be true or false (unquoted); got 1"),
    (
        "example_mtl_train",
        ["save_model='true'"],
        "save_model must be true or false (unquoted); got 'true'",
    ),
    ("example_clmain_train", ["resume_state=off"], "resume_state must be true or false"),
    (
        "example_clmain_eval",
        ["model_path=/nonexistent/saved_model.pt", "trust_model_file=no"],
        "trust_model_file must be true or false (unquoted); got 'no'",
    ),
]


@pytest.fixture
def garbage_root(tmp_path: Path) -> Path:
    """A torchvision root whose MNIST files are all present but hold garbage."""
    raw = tmp_path / "garbage" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(b"not an idx file\n")
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(b"not an idx file\n")
    return raw.parents[1]


@pytest.mark.parametrize(
    ("experiment", "overrides", "expected"),
    CASES,
    ids=[" ".join(overrides) for _, overrides, _ in CASES],
)
def test_hostile_command_exits_1_naming_the_problem_and_writes_nothing(
    run_clarena: Run,
    capsys: pytest.CaptureFixture[str],
    garbage_root: Path,
    tmp_path: Path,
    experiment: str,
    overrides: list[str],
    expected: str,
) -> None:
    overrides = [o.replace(GARBAGE_ROOT, str(garbage_root)) for o in overrides]
    with pytest.raises(SystemExit) as exit_info:
        run_clarena(experiment, *overrides)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    first = err[err.index("clarena: ") :].splitlines()[0]
    assert expected in first
    assert "Traceback" not in err
    run_dir = tmp_path / experiment
    left = {path.name for path in run_dir.iterdir()} if run_dir.exists() else set()
    assert left <= HYDRA_FILES, f"a failed run left {sorted(left - HYDRA_FILES)} in {run_dir}"


FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints-0.1"


@pytest.mark.parametrize(
    ("experiment", "model", "holds", "evaluates", "evaluate_with"),
    [
        ("example_clmain_eval", "example_mtl_train", "an MTL model", "MTL_EXPR", "CL"),
        ("example_clmain_eval", "example_stl_train", "an STL model", "STL_EXPR", "CL"),
        ("example_mtl_eval", "example_clmain_train", "a CL model", "CL_MAIN_EXPR", "MTL"),
        ("example_mtl_eval", "example_stl_train", "an STL model", "STL_EXPR", "MTL"),
        ("example_stl_eval", "example_clmain_hat", "a CL model", "CL_MAIN_EXPR", "STL"),
        ("example_stl_eval", "example_mtl_train", "an MTL model", "MTL_EXPR", "STL"),
    ],
)
def test_a_model_of_another_kind_names_the_experiment_that_evaluates_it(
    run_clarena: Run,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    experiment: str,
    model: str,
    holds: str,
    evaluates: str,
    evaluate_with: str,
) -> None:
    model_path = FIXTURES / model / "saved_model.pt"
    right = {"CL_MAIN_EXPR": "example_clmain_eval", "MTL_EXPR": "example_mtl_eval"}.get(
        evaluates, "example_stl_eval"
    )
    with pytest.raises(SystemExit) as exit_info:
        run_clarena(experiment, f"model_path={model_path}")
    assert exit_info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "Error" in line]
    assert errors == [
        f"clarena: PipelineConfigError: model_path '{model_path}' holds {holds} (saved by "
        f"{evaluates}), but this experiment evaluates {evaluate_with} models. Evaluate it with "
        f"`clarena experiment={right} model_path={model_path}`."
    ]
    left = {path.name for path in (tmp_path / experiment).iterdir()}
    assert left <= HYDRA_FILES


def test_an_output_dir_that_cannot_hold_a_run_is_refused_before_hydra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_bytes(b"kept\n")
    cases = [
        (
            tmp_path / "a_file" / "run",
            f"output_dir='{tmp_path / 'a_file' / 'run'}' goes through '{tmp_path / 'a_file'}', "
            f"which is a file, not a directory. Choose an output_dir whose parents are "
            f"directories.",
        ),
        (
            tmp_path / "a_file",
            f"output_dir='{tmp_path / 'a_file'}' is a file, not a directory.",
        ),
        (
            Path("/proc/clarena_run"),
            "output_dir='/proc/clarena_run' cannot hold a run: No such file or directory "
            "('/proc/clarena_run'). Choose an output_dir in a directory you can write to, e.g. "
            "output_dir=outputs/my_run.",
        ),
    ]
    for output_dir, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["experiment=example_clmain_train", f"output_dir={output_dir}"])
        assert exit_info.value.code == 1
        first = capsys.readouterr().err.splitlines()[0]
        assert first.startswith(f"clarena: PipelineConfigError: {expected}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert (tmp_path / "a_file").read_bytes() == b"kept\n"
