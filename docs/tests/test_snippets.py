"""Every YAML, Python and TOML snippet of the documentation, exercised.

Fenced blocks are extracted from ``docs/**/*.md``:

- ``python``: executed in a fresh namespace, in a temporary working directory.
- ``yaml`` titled with a file of the repository's config tree (````yaml
  title="configs/backbone/clmlp.yaml"``) that exists: must hold exactly that file's content.
  A title under ``configs/`` that does not exist is a user's new config: it is written into a
  copy of the config tree. Experiment configs (``configs/experiment/*.yaml``) are then composed
  through ``entrance.yaml`` with ``experiment=<name>``.
- ``yaml`` whose top level has ``_target_: clarena.backbones.<Name>``: instantiated with Hydra and
  run on a dummy batch of the shape its arguments imply; the feature must be
  ``(batch, output_dim)``.
- any other ``yaml``: must parse; ``toml``: must parse.

A comment right before a block changes what is done with it:

- ``<!-- snippet: continue -->`` (python): run after the page's previous python block, in the
  same namespace, so a page can build an example step by step.
- ``<!-- snippet: pytest -->`` (python): the block is a test module; it is written to a temporary
  file and run with pytest, which must pass.
- ``<!-- snippet: parse-only REASON -->``: parsed (YAML) or compiled (Python) but not run.
- ``<!-- snippet: skip REASON -->``: not run at all. Keep these rare; the reason is required.

Blocks in other languages (``bash``, plain text) are not run.
"""

from __future__ import annotations

import re
import shutil
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


def extract(path: Path) -> list[Snippet]:
    """The fenced blocks of ``path`` (any language), with their title and snippet directive."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(DOCS).as_posix()
    snippets: list[Snippet] = []
    index = 0
    while index < len(lines):
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
        previous = index - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        directive = _DIRECTIVE.match(lines[previous]) if previous >= 0 else None
        title = _TITLE.search(info)
        body = "\n".join(line.removeprefix(indent) for line in lines[index + 1 : end])
        snippets.append(
            Snippet(
                page=page,
                line=index + 1,
                language=info.split(" ", 1)[0].lower() if info else "",
                title=title["title"] if title else None,
                directive=directive["body"] if directive else None,
                code=textwrap.dedent(body) + "\n",
            )
        )
        index = end + 1
    return snippets


ALL_SNIPPETS = [s for page in sorted(DOCS.rglob("*.md")) for s in extract(page)]
SNIPPETS = [s for s in ALL_SNIPPETS if s.language in LANGUAGES]
_WITH_REASON = re.compile(r"(?P<kind>skip|parse-only)\s+(?P<reason>\S.{9,})")


def kind(snippet: Snippet) -> str:
    """``run``, ``continue``, ``pytest``, ``parse-only`` or ``skip``."""
    if snippet.directive is None:
        return "run"
    if snippet.directive in ("continue", "pytest"):
        return snippet.directive
    match = _WITH_REASON.fullmatch(snippet.directive)
    return match["kind"] if match else "invalid"


def of(language: str, *kinds: str) -> list[Snippet]:
    return [s for s in SNIPPETS if s.language == language and kind(s) in kinds]


def test_the_docs_have_snippets_to_test():
    languages = {s.language for s in SNIPPETS if kind(s) != "skip"}
    assert {"python", "yaml", "toml"} <= languages, f"found only {sorted(languages)} snippets"


def test_snippet_directives_are_valid():
    for snippet in SNIPPETS:
        assert kind(snippet) != "invalid", (
            f"{snippet.id}: unknown snippet directive {snippet.directive!r}; use 'continue', "
            f"'pytest', 'parse-only REASON' or 'skip REASON' (reason of ten characters or more)"
        )
        if kind(snippet) in ("continue", "pytest"):
            assert snippet.language == "python", f"{snippet.id}: {kind(snippet)} is for python"


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
    if "HATMaskBackbone" in kinds:
        outputs = backbone(input, stage="train", s_max=400.0, batch_idx=1, num_batches=1)
    elif "WSNMaskBackbone" in kinds:
        outputs = backbone(input, stage="train", mask_percentage=0.5)
    else:
        outputs = backbone(input, stage="train")
    return outputs[0]


def check_backbone_config(config: dict) -> None:
    import hydra.utils

    backbone = hydra.utils.instantiate(config)
    feature = run_backbone(backbone, dummy_input(config))
    assert tuple(feature.shape) == (2, backbone.output_dim)
    if "output_dim" in config:
        assert backbone.output_dim == config["output_dim"]


def is_backbone_config(data: object) -> bool:
    return isinstance(data, dict) and str(data.get("_target_", "")).startswith("clarena.backbones.")


# --------------------------------------------------------------------------------- config tree


def compose_experiment(config_dir: Path, name: str) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        composed = compose(config_name="entrance", overrides=[f"experiment={name}"])
    return OmegaConf.to_container(composed, resolve=False)


def check_config_file_snippet(snippet: Snippet, data: object, tmp_path: Path) -> None:
    relative = Path(snippet.title).relative_to("configs")
    existing = CONFIGS / relative
    if existing.is_file():
        expected = yaml.safe_load(existing.read_text(encoding="utf-8"))
        assert data == expected, (
            f"{snippet.id} shows {snippet.title}, but differs from that file in the repository"
        )
        if relative.parts[0] == "experiment":
            compose_experiment(CONFIGS, relative.stem)
        return
    if relative.parts[0] == "experiment":
        tree = tmp_path / "configs"
        shutil.copytree(CONFIGS, tree)
        (tree / relative).write_text(snippet.code, encoding="utf-8")
        compose_experiment(tree, relative.stem)


# --------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("snippet", of("yaml", "run", "parse-only"), ids=lambda s: s.id)
def test_yaml_snippet(snippet: Snippet, tmp_path: Path):
    data = yaml.safe_load(snippet.code)
    if kind(snippet) == "parse-only":
        return
    if snippet.title and snippet.title.startswith("configs/"):
        check_config_file_snippet(snippet, data, tmp_path)
    if is_backbone_config(data):
        check_backbone_config(data)


@pytest.mark.parametrize("snippet", of("toml", "run", "parse-only"), ids=lambda s: s.id)
def test_toml_snippet(snippet: Snippet):
    tomllib.loads(snippet.code)


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
