"""The repository carries its own design document, and the code cites only it."""

import os
import pathlib
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tracked(*patterns):
  out = subprocess.run(["git", "ls-files", *patterns], capture_output=True, text=True, cwd=REPO)
  if out.returncode != 0:  # not a git checkout (e.g. an unpacked sdist): walk the tree
    return [
      os.path.relpath(os.path.join(d, f), REPO)
      for d, _, fs in os.walk(REPO)
      if ".venv" not in d and ".git" not in d
      for f in fs
      if f.endswith((".py", ".sh", ".md"))
    ]
  return out.stdout.split()


def test_references_point_at_the_design_document():
  design = pathlib.Path(REPO, "docs", "design.md").read_text(encoding="utf-8")
  sections = set(re.findall(r"^## (\d+)\. ", design, re.M))
  numbers = sorted(int(n) for n in sections)
  assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 10  # §1..§N, no gaps
  cited = 0
  for path in _tracked("*.py", "*.sh", "*.md"):
    text = pathlib.Path(REPO, path).read_text(encoding="utf-8")
    assert not re.search(r"\bSPEC\b", text), f"{path} cites a specification outside the repository"
    for ref in re.findall(r"docs/design\.md((?:,? ?§\d+)+)", text):
      for n in re.findall(r"§(\d+)", ref):
        assert n in sections, f"{path} cites docs/design.md §{n}, which does not exist"
        cited += 1
  assert cited > 20
  readme = pathlib.Path(REPO, "README.md").read_text(encoding="utf-8")
  assert "docs/design.md" in readme
