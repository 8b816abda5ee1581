"""The documentation: the README's two commands, links that lead somewhere, the extras table."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_shows_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^\./scripts/demo\s+#", readme, flags=re.MULTILINE)
    assert re.search(r"^\./scripts/test\s+#", readme, flags=re.MULTILINE)
    assert "exec ./scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "qm_otel.setup(app=app)" in readme
    assert "opentelemetry-instrument uvicorn app:app" in readme


def test_every_relative_link_and_anchor_in_the_docs_exists() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            if not destination.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and destination.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", destination.read_text(encoding="utf-8"), flags=re.MULTILINE)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_index_lists_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for page in PAGES[1:]:
        relative = page.relative_to(ROOT / "docs").as_posix()
        if relative == "index.md" or relative.startswith("decisions/"):
            continue  # decisions/ is listed by its own README
        assert f"]({relative})" in index, f"docs/index.md does not list {relative}"


def test_the_extras_table_names_every_extra_a_user_installs() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]) - {"test"}
    install = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for extra in extras:
        assert re.search(rf"`(qm-otel)?\[{extra}\]`", install), f"docs/install.md's extras table lacks [{extra}]"
        assert f"`[{extra}]`" in readme, f"the README's list of extras lacks [{extra}]"
