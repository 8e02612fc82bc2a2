"""Check that every install line the docs print resolves on a machine holding nothing.

Usage: ``python integration-tests/check_install_lines.py [--wheelhouse dist]`` from the
repository root (``nox -s build`` runs it after building the wheels into ``dist/``).

The lines are the ``pip install`` commands of README.md's main command and of the
``<!-- install-lines: NAME -->`` blocks of docs/getting-started.md. Each runs as
``pip install --dry-run --ignore-installed`` (a resolution from nothing, as on a fresh machine,
without installing torch again) and must resolve; the clarena distributions it would install
must be exactly the ones the line names (its folders and requirement files, or a distribution
from the wheelhouse with its clarena dependencies). The nox isolation sessions install the
first two lines for real (:func:`install_line`).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
README = ROOT / "README.md"
_BLOCK = re.compile(
    r"<!-- install-lines: (?P<name>[\w-]+) -->\s*```bash\n(?P<body>.*?)```\s*<!-- /install-lines -->",
    re.S,
)
#: The clarena distributions each of them needs, in dependency order.
_NEEDS = {
    "clarena-backbones-core": ["clarena-backbones-core"],
    "clarena-backbones-cl": ["clarena-backbones-core", "clarena-backbones-cl"],
    "clarena-hat": ["clarena-backbones-core", "clarena-backbones-cl", "clarena-hat"],
    "clarena-wsn": ["clarena-backbones-core", "clarena-backbones-cl", "clarena-wsn"],
    "clarena-experiments": [
        "clarena-backbones-core",
        "clarena-backbones-cl",
        "clarena-hat",
        "clarena-wsn",
        "clarena-experiments",
    ],
}


def _pip_commands(text: str) -> list[list[str]]:
    """The ``pip install`` invocations of shell ``text``: arguments after ``install``."""
    commands = []
    for line in text.splitlines():
        for part in re.split(r"&&|;", line.split("#", 1)[0]):
            words = shlex.split(part)
            if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                commands.append(words[2:])
    return commands


def documented_lines() -> dict[str, list[list[str]]]:
    """Every documented install line: block name (``readme`` for README.md) -> pip arguments."""
    blocks = {
        m["name"]: _pip_commands(m["body"]) for m in _BLOCK.finditer(GETTING_STARTED.read_text())
    }
    readme = README.read_text()
    main = readme[readme.index("<!-- main-command -->") : readme.index("<!-- /main-command -->")]
    blocks["readme"] = _pip_commands(main)
    return blocks


def install_line(distribution: str) -> list[str]:
    """The pip arguments of the docs' checkout line that installs ``distribution`` alone."""
    for arguments in documented_lines()["checkout"]:
        if arguments and Path(arguments[-1]).name == distribution:
            return arguments
    raise LookupError(f"docs/getting-started.md has no install line ending in {distribution}")


def _named(arguments: list[str]) -> list[str]:
    """The clarena distributions a line asks for: folders, requirement files, names."""
    named: list[str] = []
    words = iter(arguments)
    for word in words:
        if word in ("--find-links", "-f"):
            next(words)
        elif word in ("-r", "--requirement"):
            for line in (ROOT / next(words)).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    named.append(Path(line).name)
        elif not word.startswith("-"):
            named.append(Path(word).name)
    return named


def _expected(arguments: list[str]) -> set[str]:
    expected: set[str] = set()
    for name in _named(arguments):
        expected.update(_NEEDS[name])
    return expected


def resolve(arguments: list[str], wheelhouse: Path | None) -> set[str]:
    """The clarena distributions ``pip install ARGUMENTS`` would install on an empty machine."""
    arguments = [str(wheelhouse) if a == "dist" and wheelhouse else a for a in arguments]
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            *arguments,
        ]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(
                f"install line failed: pip install {shlex.join(arguments)}\n{result.stderr}"
            )
        installed = json.loads(report.read_text())["install"]
    return {
        item["metadata"]["name"]
        for item in installed
        if item["metadata"]["name"].startswith("clarena")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheelhouse", type=Path, help="where nox -s build wrote the wheels")
    args = parser.parse_args()
    lines = documented_lines()
    if not lines.get("checkout") or not lines.get("wheelhouse") or not lines.get("readme"):
        raise SystemExit(f"install lines missing from the docs: found blocks {sorted(lines)}")
    checked: list[list[str]] = []
    for block, commands in lines.items():
        for arguments in commands:
            if (block == "wheelhouse" and args.wheelhouse is None) or arguments in checked:
                continue
            got = resolve(arguments, args.wheelhouse)
            want = _expected(arguments)
            if got != want:
                raise SystemExit(
                    f"pip install {shlex.join(arguments)} ({block}) would install {sorted(got)}, "
                    f"the docs promise {sorted(want)}"
                )
            print(f"ok  pip install {shlex.join(arguments)}  ->  {', '.join(sorted(got))}")
            checked.append(arguments)
    print(f"{len(checked)} install lines resolve")


if __name__ == "__main__":
    main()
