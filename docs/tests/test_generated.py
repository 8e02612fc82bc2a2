"""The generated sections of the docs (docs/hooks/generated.py) are complete and current."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from clarena.backbones.registry import KNOWN_BACKBONES

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
CONFIGS = ROOT / "configs"


def _load_hook():
    spec = importlib.util.spec_from_file_location("docs_hook", DOCS / "hooks" / "generated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _load_hook()


def render(markdown: str) -> str:
    page = SimpleNamespace(file=SimpleNamespace(src_uri="test.md"))
    return hook.on_page_markdown(markdown, page=page)


def table_names(table: str) -> list[str]:
    return re.findall(r"^\| \[?`(\w+)`", table, re.M)


def test_registry_table_lists_every_name_clarena_publishes_once():
    names = table_names(render("<!-- backbone-registry -->"))
    assert sorted(names) == sorted(KNOWN_BACKBONES)
    assert len(names) == len(set(names))


def test_registry_table_names_the_class_each_name_resolves_to():
    table = render("<!-- backbone-registry -->")
    assert "| `CLResNet52` | `clarena-backbones-cl` | [`clarena.cl.resnet.CLResNet50`]" in table
    assert "(alias of `CLResNet50`)" in table


FAMILIES = ("MLP", "ResNet18", "ResNet34", "ResNet50", "ResNet52", "ResNet101", "ResNet152")


@pytest.mark.parametrize("prefix", ["core", "CL", "HATMask", "WSNMask"])
def test_family_tables_list_the_family_with_constructor_fields(prefix: str):
    class_prefix = "" if prefix == "core" else prefix
    table = render(f"<!-- backbone-table: {prefix} -->")
    assert table_names(table) == [class_prefix + family for family in FAMILIES]
    mlp_row = table.splitlines()[2]
    assert "`input_dim`, `hidden_dims`, `output_dim`" in mlp_row
    assert "`batch_normalization` (alias `batch_normalisation`)" in mlp_row


def test_readme_commands_are_copied_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("main-command", "test-command"):
        block = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", readme, re.S).group(1)
        assert render(f"<!-- readme: {name} -->") == block.strip()


def test_experiments_table_lists_every_shipped_experiment():
    table = render("<!-- experiments-table -->")
    shipped = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
    assert table_names(table) == shipped
    assert "| `example_clmain_train` | `CL_MAIN_EXPR` | clmlp | finetuning |" in table


def test_config_marker_includes_the_file_as_a_titled_yaml_block():
    block = render("<!-- config: configs/backbone/clmlp.yaml -->")
    content = (CONFIGS / "backbone" / "clmlp.yaml").read_text(encoding="utf-8")
    assert block == f'```yaml title="configs/backbone/clmlp.yaml"\n{content.rstrip()}\n```'


def test_arguments_table_follows_the_signature_and_docstring():
    import inspect

    from clarena.experiments.running.algorithms import HAT

    table = render(
        "<!-- arguments: clarena.experiments.algorithms.HAT "
        "exclude=backbone,heads,optimizer,lr_scheduler -->"
    )
    parameters = list(inspect.signature(HAT.__init__).parameters.values())[1:]
    expected = [
        p.name
        for p in parameters
        if p.name not in ("backbone", "heads", "optimizer", "lr_scheduler")
    ]
    assert table_names(table) == expected
    s_max = inspect.signature(HAT.__init__).parameters["s_max"].default
    assert f"| `s_max` | `{s_max!r}` | " in table
    for row in table.splitlines()[2:]:
        assert not row.endswith("|  |"), f"argument without a meaning: {row}"
