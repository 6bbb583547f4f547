"""The import layers of ecgjax (README "Layout"), checked by parsing every module's imports.

A module may import only from its own unit or from units in lower layers: so no
library module imports `experiments`, and no two units import each other.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Units: subpackages and top-level modules of ecgjax, lowest layer first.
LAYERS = [
  {"errors", "fingerprints"},  # leaf helpers
  {"storage"},  # every file read or written: local paths and gs:// URLs alike
  {"data", "models"},  # records, condition table, pipelines; Flax modules
  {"metrics", "diffusion", "policies", "fidelity"},  # scores; DDPM/DDIM; policies; audit measures
  {"train"},  # training loops and checkpoints (classifier, VAE + U-Net)
  {"generators"},  # the generator interface and its kinds, the cohort writer
  {"eval", "tpu"},  # TSTR harness, judge, report, plots; programs compiled for TPU slices
  {"configs"},  # presets (each generator kind and each evaluation adds its section)
  {"cli"},  # flags shared by the mains
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str | None:
  parts = module.split(".")
  if parts[0] == "experiments":
    return "experiments"
  if parts[0] != "ecgjax" or len(parts) == 1:
    return None
  return parts[1]


def _imports(path: pathlib.Path) -> set[str]:
  tree = ast.parse(path.read_text(encoding="utf-8"))
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      if node.module == "ecgjax":  # from ecgjax import generators
        found.update(f"ecgjax.{a.name}" for a in node.names)
  return found


def _library_modules():
  for path in sorted((ROOT / "ecgjax").rglob("*.py")):
    rel = path.relative_to(ROOT / "ecgjax")
    unit = rel.parts[0].removesuffix(".py")
    if unit == "__init__" or unit == "__main__":
      unit = None
    yield path, unit


def test_every_unit_has_a_layer():
  units = {u for _, u in _library_modules() if u is not None}
  assert units == set(LAYER), (units - set(LAYER), set(LAYER) - units)


def test_imports_go_downward_only():
  bad = []
  for path, unit in _library_modules():
    if unit is None:
      continue
    for module in _imports(path):
      target = _unit(module)
      if target is None or target == unit:
        continue
      if target == "experiments" or LAYER[target] >= LAYER[unit]:
        bad.append(f"{path.relative_to(ROOT)} ({unit}) imports {module} ({target})")
  assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
  """The parser finds imports inside functions and `from ecgjax import x` forms."""
  f = tmp_path / "m.py"
  f.write_text("def f():\n  from experiments import tstr\nfrom ecgjax import eval, data\n")
  assert {"experiments", "ecgjax.eval", "ecgjax.data"} <= _imports(f)
  with pytest.raises(KeyError):
    LAYER[_unit("ecgjax.nonexistent")]


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT).with_suffix("")
  parts = list(rel.parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
  """Module -> the ecgjax modules it imports (`from pkg import mod` counts as mod when mod
  is a module), package __init__ files left out: they re-export their package."""
  paths = {_module_name(p): p for p in (ROOT / "ecgjax").rglob("*.py")}
  modules = {m for m, p in paths.items() if p.name != "__init__.py"}
  graph = {}
  for m in modules:
    tree = ast.parse(paths[m].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      found.update(n for n in names if n in modules and n != m)
    graph[m] = found
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The cycles of a directed graph, one per strongly connected component of 2+ nodes."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_no_module_imports_itself_through_others():
  """No cycle between modules, inside a package or across (imports inside functions count)."""
  assert _cycles(_module_graph()) == []


def test_the_cycle_finder_sees_a_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
  assert _cycles(graph) == [["a", "b", "c"]]
