"""Every YAML, Python and TOML snippet of the documentation, exercised.

Fenced blocks are extracted from ``docs/**/*.md``, and so are the shipped config files that
``<!-- config: configs/... -->`` markers include (docs/hooks/generated.py renders them):

- ``python``: executed in a fresh namespace, in a temporary working directory.
- ``yaml`` titled with a file of the repository's config tree (````yaml
  title="configs/backbone/clmlp.yaml"``) that exists: must hold exactly that file's content.
  A title under ``configs/`` that does not exist is a user's new config: it is written into a
  copy of the config tree. Experiment configs (``configs/experiment/*.yaml``) are then composed
  through ``entrance.yaml`` with ``experiment=<name>``.
- ``yaml`` whose top level has ``_target_: clarena.backbones.<Name>``: instantiated with Hydra and
  run on a dummy batch of the shape its arguments imply; the feature must be
  ``(batch, output_dim)``. Any other ``_target_`` (optimisers, data modules, trainers, and the
  entries of logger and callback mappings) is instantiated.
- any other ``yaml``: must parse; ``toml``: must parse.
- ``bash``: every ``clarena ...`` command line is composed (not run) against the shipped config
  tree plus the new config files the docs show; the experiment's pipeline must exist and its
  backbone must build and run.

A comment right before a block changes what is done with it:

- ``<!-- snippet: continue -->`` (python): run after the page's previous python block, in the
  same namespace, so a page can build an example step by step.
- ``<!-- snippet: pytest -->`` (python): the block is a test module; it is written to a temporary
  file and run with pytest, which must pass.
- ``<!-- snippet: error MESSAGE -->`` (bash): every ``clarena`` command of the block must stop
  with an error whose explanation contains ``MESSAGE``.
- ``<!-- snippet: parse-only REASON -->``: parsed (YAML; still compared with the file it names)
  or compiled (Python), but nothing is built or run.
- ``<!-- snippet: skip REASON -->``: not run at all. Keep these rare; the reason is required.

Blocks in other languages (``bash``, plain text) are not run.
"""

from __future__ import annotations

import atexit
import functools
import json
import re
import shlex
import shutil
import tempfile
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
CONFIGS = ROOT / "configs"
LANGUAGES = ("python", "yaml", "toml")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<info>[^\n`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*snippet:\s*(?P<body>.*?)\s*-->\s*$")
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')
#: A shipped config file the docs hook includes as a YAML block at build time.
_INCLUDE = re.compile(r"^\s*<!--\s*config:\s*(?P<path>configs/[\w./-]+\.yaml)\s*-->\s*$")


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    language: str
    title: str | None
    directive: str | None
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def directive_before(lines: list[str], index: int) -> str | None:
    """The snippet directive on the last non-blank line before ``lines[index]``, if any."""
    previous = index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    directive = _DIRECTIVE.match(lines[previous]) if previous >= 0 else None
    return directive["body"] if directive else None


def extract(path: Path) -> list[Snippet]:
    """The fenced blocks of ``path`` (any language), with their title and snippet directive."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(DOCS).as_posix()
    snippets: list[Snippet] = []
    index = 0
    while index < len(lines):
        included = _INCLUDE.match(lines[index])
        if included is not None:
            path = included["path"]
            code = (CONFIGS / Path(path).relative_to("configs")).read_text(encoding="utf-8")
            directive = directive_before(lines, index)
            snippets.append(Snippet(page, index + 1, "yaml", path, directive, code))
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page}:{index + 1}: unclosed code fence")
        directive = directive_before(lines, index)
        title = _TITLE.search(info)
        body = "\n".join(line.removeprefix(indent) for line in lines[index + 1 : end])
        snippets.append(
            Snippet(
                page=page,
                line=index + 1,
                language=info.split(" ", 1)[0].lower() if info else "",
                title=title["title"] if title else None,
                directive=directive,
                code=textwrap.dedent(body) + "\n",
            )
        )
        index = end + 1
    return snippets


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The snippets build small models; on a 2-core CI machine extra threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ALL_SNIPPETS = [s for page in sorted(DOCS.rglob("*.md")) for s in extract(page)]
SNIPPETS = [s for s in ALL_SNIPPETS if s.language in LANGUAGES]
_WITH_REASON = re.compile(r"(?P<kind>skip|parse-only)\s+(?P<reason>\S.{9,})")
_ERROR = re.compile(r"error\s+(?P<message>\S.*)")


def kind(snippet: Snippet) -> str:
    """``run``, ``continue``, ``pytest``, ``parse-only`` or ``skip``."""
    if snippet.directive is None:
        return "run"
    if snippet.directive in ("continue", "pytest"):
        return snippet.directive
    if _ERROR.fullmatch(snippet.directive):
        return "error"
    match = _WITH_REASON.fullmatch(snippet.directive)
    return match["kind"] if match else "invalid"


def of(language: str, *kinds: str) -> list[Snippet]:
    return [s for s in SNIPPETS if s.language == language and kind(s) in kinds]


def test_the_docs_have_snippets_to_test():
    languages = {s.language for s in SNIPPETS if kind(s) != "skip"}
    assert {"python", "yaml", "toml"} <= languages, f"found only {sorted(languages)} snippets"


def test_snippet_directives_are_valid():
    for snippet in ALL_SNIPPETS:
        if snippet.directive is None:
            continue
        assert kind(snippet) != "invalid", (
            f"{snippet.id}: unknown snippet directive {snippet.directive!r}; use 'continue', "
            f"'pytest', 'error MESSAGE', 'parse-only REASON' or 'skip REASON' (reason of ten "
            f"characters or more)"
        )
        if kind(snippet) in ("continue", "pytest"):
            assert snippet.language == "python", f"{snippet.id}: {kind(snippet)} is for python"
        if kind(snippet) == "error":
            assert snippet.language == "bash", f"{snippet.id}: 'error' is for clarena commands"


def test_every_fence_has_a_known_language_or_none():
    for snippet in ALL_SNIPPETS:
        assert snippet.language in (*LANGUAGES, "bash", "text", ""), (
            f"{snippet.id}: fence language {snippet.language!r} is neither tested "
            f"({', '.join(LANGUAGES)}) nor one of bash/text; add it to the test"
        )


# --------------------------------------------------------------------------------- backbones


def dummy_input(config: dict) -> torch.Tensor:
    """A batch of two inputs shaped as the backbone ``config`` expects."""
    if "input_dim" in config:
        features = int(config["input_dim"])
        side = int(features**0.5)
        return (
            torch.randn(2, 1, side, side) if side * side == features else torch.randn(2, features)
        )
    side = 32 if config.get("small_input") else 64
    return torch.randn(2, int(config.get("input_channels", 3)), side, side)


def run_backbone(backbone: torch.nn.Module, input: torch.Tensor) -> torch.Tensor:
    """One training-stage forward of any clarena backbone; returns the feature."""
    kinds = {cls.__name__ for cls in type(backbone).__mro__}
    if "CLBackbone" in kinds:
        backbone.setup_task_id(1)
    with torch.no_grad():
        return _forward(backbone, input, kinds)


def _forward(backbone: torch.nn.Module, input: torch.Tensor, kinds: set[str]) -> torch.Tensor:
    if getattr(getattr(backbone, "mask_method", None), "name", None) == "hat":
        outputs = backbone(input, stage="train", s_max=400.0, batch_idx=1, num_batches=1)
    elif _method_name(backbone) == "wsn":
        outputs = backbone(input, stage="train", mask_percentage=0.5)
    else:
        outputs = backbone(input, stage="train")
    return outputs[0]


def _method_name(backbone: torch.nn.Module) -> str | None:
    """The name of the mask method attached to ``backbone`` (``None`` without one)."""
    method = getattr(backbone, "mask_method", None)
    return None if method is None else method.name


def check_backbone_config(config: dict) -> None:
    _check_backbone_config(json.dumps(config, sort_keys=True))


@functools.cache
def _check_backbone_config(config_json: str) -> None:
    # Cached: the same backbone config appears on several pages and in composed experiments.
    import hydra.utils

    config = json.loads(config_json)

    backbone = hydra.utils.instantiate(config)
    feature = run_backbone(backbone, dummy_input(config))
    assert tuple(feature.shape) == (2, backbone.output_dim)
    if "output_dim" in config:
        assert backbone.output_dim == config["output_dim"]


def is_backbone_config(data: object) -> bool:
    return isinstance(data, dict) and str(data.get("_target_", "")).startswith("clarena.backbones.")


# --------------------------------------------------------------------------------- config tree


def compose(config_dir: Path, overrides: list[str]) -> dict:
    return _compose(config_dir, tuple(overrides))


@functools.cache
def _compose(config_dir: Path, overrides: tuple[str, ...]) -> dict:
    """Compose ``entrance.yaml`` of ``config_dir`` (with the shipped tree behind it) and check it.

    The composed experiment must name a known pipeline; an experiment pipeline's components
    must build as the pipeline builds them, and its backbone must run on a dummy batch.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from clarena.experiments.running.pipelines import PIPELINES

    if config_dir != CONFIGS:
        overrides = (*overrides, f"hydra.searchpath=[file://{CONFIGS}]")
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        composed = OmegaConf.to_container(
            compose(config_name="entrance", overrides=list(overrides)), resolve=False
        )
    assert composed.get("pipeline") in PIPELINES, f"unknown pipeline {composed.get('pipeline')!r}"
    build_like_the_pipeline(composed)
    return composed


def build_like_the_pipeline(composed: dict) -> None:
    """Check the config, then build dataset, backbone, heads, optimiser and algorithm as the
    pipeline does.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from clarena.experiments.running.pipelines import cl, parse_experiment, supervised

    cfg = OmegaConf.create(composed)
    config = parse_experiment(cfg)
    pipeline = composed["pipeline"]
    if pipeline == "CL_MAIN_EXPR":
        instantiate(cfg.cl_dataset)
        algorithm = cl.build_algorithm(config)
    elif pipeline == "MTL_EXPR":
        algorithm = supervised.build_mtl(config, instantiate(cfg.mtl_dataset))
    elif pipeline == "STL_EXPR":
        algorithm = supervised.build_stl(config, instantiate(cfg.stl_dataset))
    else:
        return
    feature = run_backbone(algorithm.backbone, dummy_input(composed["backbone"]))
    assert tuple(feature.shape) == (2, algorithm.backbone.output_dim)


def compose_experiment(config_dir: Path, name: str) -> dict:
    return compose(config_dir, [f"experiment={name}"])


def check_config_file_snippet(snippet: Snippet, data: object, tmp_path: Path, build: bool) -> None:
    relative = Path(snippet.title).relative_to("configs")
    existing = CONFIGS / relative
    if existing.is_file():
        expected = yaml.safe_load(existing.read_text(encoding="utf-8"))
        assert data == expected, (
            f"{snippet.id} shows {snippet.title}, but differs from that file in the repository"
        )
    if build and relative.parts[0] == "experiment":
        tree = CONFIGS if existing.is_file() else user_tree()
        compose_experiment(tree, relative.stem)


@functools.cache
def user_tree() -> Path:
    """A user's config tree: every new config file the docs show, over the shipped tree.

    Built once per test session in a temporary folder removed at exit.
    """
    folder = Path(tempfile.mkdtemp(prefix="clarena-docs-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    tree = folder / "configs"
    tree.mkdir()
    shutil.copy(CONFIGS / "entrance.yaml", tree / "entrance.yaml")
    for snippet in SNIPPETS:
        if (
            snippet.language == "yaml"
            and kind(snippet) == "run"
            and snippet.title
            and snippet.title.startswith("configs/")
            and not (CONFIGS / Path(snippet.title).relative_to("configs")).exists()
        ):
            path = tree / Path(snippet.title).relative_to("configs")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(snippet.code, encoding="utf-8")
    return tree


# --------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("snippet", of("yaml", "run", "parse-only"), ids=lambda s: s.id)
def test_yaml_snippet(snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = yaml.safe_load(snippet.code)
    build = kind(snippet) != "parse-only"
    if snippet.title and snippet.title.startswith("configs/"):
        check_config_file_snippet(snippet, data, tmp_path, build)
    if not build:
        return
    monkeypatch.chdir(tmp_path)
    group = Path(snippet.title).parts[1] if snippet.title else None
    if is_backbone_config(data):
        check_backbone_config(data)
    elif group not in BUILT_BY_PIPELINES:
        instantiate_targets(data, **GROUP_ARGUMENTS.get(group, {}))


#: Groups whose objects need other built objects (backbone, heads); the experiments using them
#: are composed and built by :func:`compose`.
BUILT_BY_PIPELINES = ("cl_algorithm", "mtl_algorithm", "stl_algorithm")
#: Arguments the pipelines pass when they build an entry of these groups.
GROUP_ARGUMENTS = {"lightning_loggers": {"save_dir": ".", "version": "docs"}}


def instantiate_targets(data: object, **arguments: object) -> None:
    """Build the object of a ``_target_`` config, or of each ``_target_`` entry of a mapping."""
    import hydra.utils

    if not isinstance(data, dict):
        return
    configs = [data] if "_target_" in data else [v for v in data.values() if isinstance(v, dict)]
    for config in configs:
        if "_target_" in config:
            hydra.utils.instantiate(config, **arguments)


@pytest.mark.parametrize("snippet", of("toml", "run", "parse-only"), ids=lambda s: s.id)
def test_toml_snippet(snippet: Snippet):
    tomllib.loads(snippet.code)


def clarena_commands() -> list[tuple[str, list[str], str | None]]:
    """Every ``clarena ...`` command line of the docs' bash blocks, as Hydra overrides.

    The third item is the error message the docs say the command stops with, if any.
    """
    commands = []
    for snippet in ALL_SNIPPETS:
        if snippet.language != "bash" or kind(snippet) == "skip":
            continue
        expected = (
            _ERROR.fullmatch(snippet.directive)["message"] if kind(snippet) == "error" else None
        )
        # A command continued over lines with a trailing backslash is one command line.
        for offset, line in enumerate(snippet.code.replace("\\\n", " ").splitlines(), start=1):
            words = shlex.split(line, comments=True)
            if words[:1] == ["clarena"]:
                commands.append((f"{snippet.page}:{snippet.line + offset}", words[1:], expected))
    return commands


@pytest.mark.parametrize(("where", "overrides", "expected_error"), clarena_commands(), ids=str)
def test_clarena_command_composes(where: str, overrides: list[str], expected_error: str | None):
    """Each documented ``clarena`` command composes against the shipped tree plus the docs' files.

    Its components are built as the pipeline builds them; a command documented as failing must
    fail with the documented message.
    """
    if "-m" in overrides or "--multirun" in overrides:
        overrides = [o for o in overrides if o not in ("-m", "--multirun")]
        overrides = [o.split(",")[0] if "=" in o else o for o in overrides]
    if expected_error is None:
        compose(user_tree(), overrides)
        return
    from clarena.experiments.errors import explain

    with pytest.raises(Exception) as raised:  # noqa: PT011 - the message is checked below
        _compose.__wrapped__(user_tree(), tuple(overrides))
    assert expected_error in explain(raised.value), f"{where}: {explain(raised.value)}"


def chain(snippet: Snippet) -> list[Snippet]:
    """``snippet`` and the python blocks it continues, first to last."""
    page = [s for s in SNIPPETS if s.page == snippet.page and s.language == "python"]
    index = page.index(snippet)
    start = index
    while kind(page[start]) == "continue":
        start -= 1
        assert start >= 0, f"{snippet.id}: 'continue' but no python block before it"
    return page[start : index + 1]


@pytest.mark.parametrize(
    "snippet", of("python", "run", "continue", "parse-only"), ids=lambda s: s.id
)
def test_python_snippet(snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if kind(snippet) == "parse-only":
        compile(snippet.code, f"docs/{snippet.id}", "exec")
        return
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace = {"__name__": "__docs_snippet__"}
    for part in chain(snippet):
        exec(compile(part.code, f"docs/{part.id}", "exec"), namespace)


@pytest.mark.parametrize("snippet", of("python", "pytest"), ids=lambda s: s.id)
def test_pytest_snippet(snippet: Snippet, tmp_path: Path):
    module = tmp_path / "test_docs_snippet.py"
    module.write_text(snippet.code, encoding="utf-8")
    exit_code = pytest.main(
        [
            str(module),
            "-q",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            f"--rootdir={tmp_path}",
        ]
    )
    assert exit_code == pytest.ExitCode.OK, f"{snippet.id}: the test module failed (see above)"
