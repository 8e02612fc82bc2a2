"""Check the built wheels: shared namespaces left open, typing marker, entry points, and that the
clarena-experiments wheel carries the repository's top-level ``configs/`` byte for byte.

Usage: ``python integration-tests/check_wheels.py DIST_DIR`` (run by ``nox -s build``).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

EXPECTED = {
    "clarena_backbones_core": "clarena/backbones/",
    "clarena_backbones_cl": "clarena/cl/",
    "clarena_hat": "clarena/hat/",
    "clarena_wsn": "clarena/wsn/",
    "clarena_experiments": "clarena/experiments/",
}


#: The repository's one Hydra config tree, which the clarena-experiments wheel must carry.
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = "clarena/experiments/configs/"


def check_configs(wheel: Path) -> list[str]:
    """The wheel carries every file of the top-level ``configs/``, byte for byte, and no other."""
    archive = zipfile.ZipFile(wheel)
    carried = {n[len(SHIPPED) :] for n in archive.namelist() if n.startswith(SHIPPED)}
    tree = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*") if p.is_file()}
    if "entrance.yaml" not in carried:
        return [f"{wheel.name}: the Hydra config tree is not shipped ({SHIPPED}entrance.yaml)"]
    problems = [f"{wheel.name}: configs/{name} is not carried" for name in sorted(tree - carried)]
    problems += [
        f"{wheel.name}: carries {SHIPPED}{n}, not in configs/" for n in sorted(carried - tree)
    ]
    problems += [
        f"{wheel.name}: {SHIPPED}{name} differs from configs/{name}"
        for name in sorted(tree & carried)
        if archive.read(SHIPPED + name) != (CONFIGS / name).read_bytes()
    ]
    return problems


def check(wheel: Path) -> list[str]:
    distribution = wheel.name.split("-")[0]
    package = EXPECTED.get(distribution)
    if package is None:
        return [f"{wheel.name}: unexpected distribution {distribution}"]
    names = zipfile.ZipFile(wheel).namelist()
    problems = []
    if "clarena/__init__.py" in names:
        problems.append(
            f"{wheel.name}: ships clarena/__init__.py, which breaks the shared namespace"
        )
    if f"{package}py.typed" not in names:
        problems.append(f"{wheel.name}: no {package}py.typed")
    if f"{package}__init__.py" not in names:
        problems.append(f"{wheel.name}: no {package}__init__.py")
    # clarena-experiments also ships its Hydra search-path plugin in the hydra_plugins namespace.
    plugins = (
        "hydra_plugins/clarena_experiments/" if distribution == "clarena_experiments" else None
    )
    allowed = (package, f"{distribution}-", *([plugins] if plugins else []))
    stray = [n for n in names if not n.startswith(allowed)]
    if stray:
        problems.append(f"{wheel.name}: files outside {package}: {stray[:5]}")
    if distribution != "clarena_experiments":
        entry_points = [n for n in names if n.endswith("entry_points.txt")]
        if (
            not entry_points
            or "[clarena.backbones]" not in zipfile.ZipFile(wheel).read(entry_points[0]).decode()
        ):
            problems.append(f"{wheel.name}: no clarena.backbones entry points")
    else:
        problems += check_configs(wheel)
        if f"{plugins}searchpath.py" not in names:
            problems.append(f"{wheel.name}: no Hydra search-path plugin in {plugins}")
    if "hydra_plugins/__init__.py" in names:
        problems.append(
            f"{wheel.name}: ships hydra_plugins/__init__.py, which breaks Hydra's namespace"
        )
    return problems


def main() -> int:
    wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
    if not wheels:
        print(f"no wheels in {sys.argv[1]}")
        return 1
    problems = [p for wheel in wheels for p in check(wheel)]
    for wheel in wheels:
        print(f"checked {wheel.name}")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
