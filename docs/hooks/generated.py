"""MkDocs hook: fill generated sections of the pages at build time, so they cannot go stale.

Markers replaced in every page:

- ``<!-- backbone-registry -->``: every backbone name clarena publishes
  (``clarena.backbones.registry.KNOWN_BACKBONES``; a third party's plug-ins installed where the
  docs are built are not clarena's to document), the distribution providing it and what it
  resolves to.
- ``<!-- backbone-table: PREFIX -->``: the backbones whose class name is ``PREFIX`` + a family
  (``MLP``, ``ResNet18`` ...; ``PREFIX`` is ``core``, ``CL``, ``HATMask`` or ``WSNMask``), with the
  first line of each class docstring and its constructor arguments read from the signature.
- ``<!-- readme: NAME -->``: the fenced block between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in
  the repository's README.md (the getting-started commands).
- ``<!-- experiments-table -->``: every experiment config shipped in ``configs/experiment/``, with
  its pipeline, backbone, algorithm and the first line of its header comment.
- ``<!-- arguments: dotted.Class [exclude=a,b] -->``: the constructor arguments of a class (a
  config's fields), with their defaults from the signature and their meaning from the Google
  ``Args:`` sections of the class and its bases.
- ``<!-- config: configs/GROUP/FILE.yaml -->``: that file of the shipped config tree, as a YAML
  block titled with its path (docs/tests/test_snippets.py tests it like any YAML snippet).

A registered name that cannot be resolved in the build environment is a warning, so
``mkdocs build --strict`` fails unless every distribution is installed where the docs are built.
"""

from __future__ import annotations

import inspect
import logging
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.generated")

ROOT = Path(__file__).resolve().parents[2]
#: The shipped config tree; docs name its files ``configs/GROUP/FILE.yaml``.
CONFIGS = ROOT / "configs"
_MARKER = re.compile(
    r"<!--\s*(backbone-registry|backbone-table:\s*(\w+)|readme:\s*([\w-]+)"
    r"|config:\s*(configs/[\w./-]+\.yaml)|experiments-table"
    r"|arguments:\s*([\w.]+)(?:\s+exclude=([\w,]+))?)\s*-->"
)
_ROLE = re.compile(r":\w+:`(?P<short>~?)(?P<path>[\w.]+)`")
_FAMILIES = ("MLP", "ResNet18", "ResNet34", "ResNet50", "ResNet52", "ResNet101", "ResNet152")


def _entry_point_targets() -> dict[str, str]:
    """Map each installed backbone name to the dotted path of the class it resolves to."""
    from clarena.backbones.registry import ENTRY_POINT_GROUP

    return {ep.name: ep.value.replace(":", ".") for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _alias_of(name: str, targets: dict[str, str]) -> str | None:
    """The canonical name of ``name`` when it is an alias (``ResNet52`` -> ``ResNet50``)."""
    target = targets.get(name)
    if target is None:
        return None
    class_name = target.rsplit(".", 1)[1]
    return class_name if class_name != name else None


def _registry_table(page: str) -> str:
    from clarena.backbones.registry import KNOWN_BACKBONES

    targets = _entry_point_targets()
    rows = [
        "| name (`_target_: clarena.backbones.<name>`) | distribution | resolves to |",
        "|---|---|---|",
    ]
    for name in sorted(KNOWN_BACKBONES, key=_sort_key):
        distribution = KNOWN_BACKBONES[name]
        if name not in targets:
            log.warning(
                "%s: backbone '%s' is registered for %s, which is not installed where the docs "
                "are built; install every distribution before building.",
                page,
                name,
                distribution,
            )
            rows.append(f"| `{name}` | `{distribution}` | (not installed) |")
            continue
        alias = _alias_of(name, targets)
        where = f"[`{targets[name]}`][{targets[name]}]"
        if alias:
            where += f" (alias of `{alias}`)"
        rows.append(f"| `{name}` | `{distribution}` | {where} |")
    return "\n".join(rows)


def _sort_key(name: str) -> tuple[int, int, str]:
    prefixes = ("", "CL", "HATMask", "WSNMask")
    for family_index, family in enumerate(_FAMILIES):
        prefix = name.removesuffix(family)
        if name.endswith(family) and prefix in prefixes:
            return prefixes.index(prefix), family_index, name
    return len(prefixes), 0, name


def _describe_default(value: Any) -> str:
    if inspect.isclass(value):
        return value.__name__
    return (
        "null" if value is None else repr(value).replace("True", "true").replace("False", "false")
    )


def _markdown(docstring: str) -> str:
    """Docstring reST roles and double backticks as Markdown code spans."""
    text = _ROLE.sub(
        lambda m: f"`{m['path'].rsplit('.', 1)[-1] if m['short'] else m['path']}`", docstring
    )
    return re.sub(r"``(.+?)``", r"`\1`", text)


def _argument_cells(cls: Any) -> tuple[str, str]:
    """Required and optional constructor arguments of ``cls`` (a class or a registered builder
    function), as Markdown cells."""
    from clarena.backbones._arguments import ARGUMENT_ALIASES

    aliases = {canonical: alias for alias, canonical in ARGUMENT_ALIASES.items()}
    if inspect.isclass(cls):
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    else:
        parameters = list(inspect.signature(cls).parameters.values())

    def field(name: str) -> str:
        return f"`{name}` (alias `{aliases[name]}`)" if name in aliases else f"`{name}`"

    required = [field(p.name) for p in parameters if p.default is inspect.Parameter.empty]
    optional = [
        f"{field(p.name)} = `{_describe_default(p.default)}`"
        for p in parameters
        if p.default is not inspect.Parameter.empty
    ]
    return ", ".join(required) or "none", ", ".join(optional) or "none"


def _family_table(prefix: str, page: str) -> str:
    import clarena.backbones

    prefix = "" if prefix == "core" else prefix
    targets = _entry_point_targets()
    rows = [
        "| backbone | description | required config fields | optional fields (default) |",
        "|---|---|---|---|",
    ]
    for family in _FAMILIES:
        name = prefix + family
        if name not in targets:
            log.warning("%s: backbone '%s' is not installed where the docs are built.", page, name)
            continue
        cls = getattr(clarena.backbones, name)
        alias = _alias_of(name, targets)
        if alias:
            description = f"Alias of `{alias}` (the published docs' name for ResNet-50)."
        else:
            summary = (inspect.getdoc(cls) or "").split("\n\n", 1)[0]
            description = _markdown(summary.replace("\n", " "))
        required, optional = _argument_cells(cls)
        rows.append(f"| [`{name}`][{targets[name]}] | {description} | {required} | {optional} |")
    return "\n".join(rows)


def _readme_block(name: str, page: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {re.escape(name)} -->\n(.*?)<!-- /{re.escape(name)} -->", text, re.S)
    if match is None:
        log.warning("%s: README.md has no section <!-- %s --> ... <!-- /%s -->.", page, name, name)
        return ""
    return match.group(1).strip()


def _config_block(path: str, page: str) -> str:
    file = CONFIGS / Path(path).relative_to("configs")
    if not file.is_file():
        log.warning("%s: includes %s, which does not exist.", page, path)
        return ""
    return f'```yaml title="{path}"\n{file.read_text(encoding="utf-8").rstrip()}\n```'


def _google_args(docstring: str) -> dict[str, str]:
    """Argument name -> description from the ``Args:`` section of a Google-style docstring."""
    entries: dict[str, str] = {}
    lines = docstring.splitlines()
    if "Args:" not in (line.strip() for line in lines):
        return entries
    start = [line.strip() for line in lines].index("Args:") + 1
    indent: int | None = None
    current: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        entry = re.match(r"^([\w*, ]+):\s*(.*)$", line.strip()) if depth == indent else None
        if entry:
            current = [entry.group(2)]
            for name in entry.group(1).split(","):
                entries[name.strip().lstrip("*")] = current  # type: ignore[assignment]
        elif current:
            current.append(line.strip())
    return {name: " ".join(parts) for name, parts in entries.items()}  # type: ignore[arg-type]


def _arguments_table(path: str, excluded: set[str], page: str) -> str:
    import importlib

    module_name, class_name = path.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        log.warning("%s: cannot document the arguments of %s (%s).", page, path, error)
        return ""
    descriptions: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        descriptions.update(_google_args(inspect.getdoc(klass) or ""))
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for klass in cls.__mro__:
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if named:
            break
    for parameter in named:
        if parameter.name in excluded:
            continue
        default = (
            "required"
            if parameter.default is inspect.Parameter.empty
            else f"`{_describe_default(parameter.default)}`"
        )
        meaning = _markdown(descriptions.get(parameter.name, ""))
        if not meaning:
            log.warning(
                "%s: %s documents no meaning for argument '%s'.", page, path, parameter.name
            )
        rows.append(f"| `{parameter.name}` | {default} | {meaning} |")
    return "\n".join(rows)


def _experiments_table() -> str:
    import yaml

    rows = [
        "| experiment | pipeline | backbone | algorithm | what it runs |",
        "|---|---|---|---|---|",
    ]
    for file in sorted((CONFIGS / "experiment").glob("*.yaml")):
        text = file.read_text(encoding="utf-8")
        config = yaml.safe_load(text) or {}
        choices: dict[str, str] = {}
        for entry in config.get("defaults", []):
            if isinstance(entry, dict):
                for group, choice in entry.items():
                    choices[group.strip("/")] = str(choice).removesuffix(".yaml")
        algorithm = next(
            (
                choices[g]
                for g in ("cl_algorithm", "mtl_algorithm", "stl_algorithm")
                if g in choices
            ),
            "from the saved model",
        )
        backbone = choices.get("backbone", "from the saved model")
        comments = [
            line.lstrip("# ").rstrip()
            for line in text.splitlines()
            if line.startswith("#") and "@package" not in line
        ]
        what = comments[0].rstrip(":") if comments else ""
        rows.append(
            f"| `{file.stem}` | `{config.get('pipeline')}` | {backbone} | {algorithm} | {what} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace the generated-section markers of ``page``."""
    source = page.file.src_uri

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "backbone-registry":
            return _registry_table(source)
        if match.group(2):
            return _family_table(match.group(2), source)
        if match.group(4):
            return _config_block(match.group(4), source)
        if match.group(1) == "experiments-table":
            return _experiments_table()
        if match.group(5):
            excluded = set(match.group(6).split(",")) if match.group(6) else set()
            return _arguments_table(match.group(5), excluded, source)
        return _readme_block(match.group(3), source)

    return _MARKER.sub(replace, markdown)
