"""The README stays a ten-minute read whose links resolve, and no file points
readers at issue numbers they cannot look up."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISSUE_REF = re.compile(r"\bissues? #?\d+|\(#\d+\)", re.IGNORECASE)


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text) < 12_000, f"README.md has {len(text)} characters"
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links, "the README links into docs/"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_docs_links_resolve():
    bad = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / link).exists():
                bad.append(f"{page.name}: {link}")
    assert not bad, bad


def test_no_issue_number_references():
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.yaml", "*.toml", "Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    hits = []
    for rel in files:
        path = ROOT / rel
        if not path.is_file() or rel == "tests/test_docs.py":
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if ISSUE_REF.search(line):
                hits.append(f"{rel}:{n}: {line.strip()[:80]}")
    assert not hits, "\n".join(hits)
