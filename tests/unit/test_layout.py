"""The folder tree, docs/architecture.md's picture and import-linter's layers say the same thing.

A module added flat in ``src/qm_otel/``, a folder the architecture page does not draw, a module its
table does not name, or a folder missing from the layers contract fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "qm_otel"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
#: the modules that may sit at the package's top: the facade, the state room, the test helpers
TOP_MODULES = {"__init__", "_state", "_version", "testing"}


def folders() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def top_layers() -> list[list[str]]:
    """The first layers contract's layers, each a list of names under qm_otel (cli, launch, ...)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = project["tool"]["importlinter"]["contracts"][0]
    return [[name.strip().removeprefix("qm_otel.") for name in re.split(r"[|:]", layer)]
            for layer in contract["layers"]]


def drawn_tree() -> str:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    return text[text.index("    src/qm_otel/"):text.index("| layer (folder)")]


def table_rows() -> dict[str, str]:
    """The architecture table: its first cell (the layer) → its second (the modules)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text[text.index("| layer (folder)"):text.index("## Where each concern lives")]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2:
            rows[cells[0]] = cells[1]
    return rows


def test_only_the_facade_the_state_room_and_the_test_helpers_sit_at_the_top() -> None:
    flat = {p.stem for p in PACKAGE.glob("*.py")}
    assert flat == TOP_MODULES


def test_every_folder_is_a_layer_in_the_contract_and_in_the_picture() -> None:
    in_contract = {name for layer in top_layers() for name in layer}
    tree = drawn_tree()
    for folder in folders():
        assert folder in in_contract, f"{folder}/ is not in import-linter's layers"
        assert f"{folder}/" in tree, f"{folder}/ is not drawn in docs/architecture.md"
    assert in_contract - set(folders()) <= TOP_MODULES


def test_the_picture_draws_the_folders_in_the_contracts_order() -> None:
    tree = drawn_tree()
    drawn = [name for layer in top_layers() for name in layer if name in folders()]
    positions = [tree.index(f"{name}/") for name in drawn]
    assert positions == sorted(positions), drawn


def test_the_table_names_every_module_of_every_folder() -> None:
    rows = table_rows()
    for folder in folders():
        if folder == "cli":
            continue  # the tooling's row names its parts, not each file of render/
        row = next(((layer, modules) for layer, modules in rows.items() if f"`{folder}/`" in layer), None)
        assert row is not None, f"no row of the table is {folder}/"
        # a row of two sibling folders (`signals/` │ `instrumentation/`) names their modules in that order, split by │
        siblings = re.findall(r"`(\w+)/`", row[0])
        part = row[1].split("│")[siblings.index(folder)] if len(siblings) > 1 else row[1]
        named = set(re.findall(r"`(\w+)`", part))
        actual = {p.stem for p in (PACKAGE / folder).glob("*.py")} - {"__init__"}
        assert actual <= named, f"{folder}/: the table does not name {sorted(actual - named)}"
        assert named <= actual, f"{folder}/: the table names modules that do not exist: {sorted(named - actual)}"


def test_no_module_imports_in_a_circle_in_the_package_or_the_benchmarks() -> None:
    """No static import circle (type-level imports included), in ``qm_otel`` or in ``benchmarks/``.

    import-linter's acyclic contract guards the package's siblings; this reads every module pair, the
    benchmarks too (bench, report, soak, logs, scale and their support module).
    """
    import grimp

    for package in ("qm_otel", "benchmarks"):
        graph = grimp.build_graph(package, exclude_type_checking_imports=False)
        circles = sorted((module, imported) for module in graph.modules
                         for imported in graph.find_modules_directly_imported_by(module)
                         if imported.startswith(package) and graph.chain_exists(importer=imported, imported=module))
        assert circles == [], f"{package}: import circles through {circles}"
