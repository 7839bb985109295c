"""The package's layout rules (STYLE.md): one home per domain, demo code apart, no cycles.

- A domain package of gsv_pipelines/lib/ imports the shared package (lib/core) and its own
  modules, and no other domain's, except the pairs in EXCEPTIONS, each with its reason.
- lib/core imports no domain.
- No module outside gsv_pipelines/demo/ imports it, except the command line (DEMO_IMPORTERS).
- The modules' top-level imports form no cycle.
- tests/ mirrors the package: a test module of lib/ or demo/ sits where its module's path says.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gsv_pipelines"
TESTS = Path(__file__).resolve().parent
LIB = PACKAGE / "lib"
DOMAINS = sorted(
    p.name for p in LIB.iterdir() if p.is_dir() and p.name not in ("core", "__pycache__")
)

EXCEPTIONS = {
    ("drills", "backups"): "a drill restores the backups: their kinds, manifests' details, the "
    "export and snapshot formats, the fingerprints recorded at backup time, and the safety "
    "backup a restore takes before it replaces a destination",
    ("alerts", "backups"): "the metrics exporter reports each domain's state from its records",
    ("alerts", "drills"): "the metrics exporter reports the last drill's RTO, RPO and result",
    ("alerts", "rotation"): "the metrics exporter reports secret ages against the policy",
    ("alerts", "scanning"): "the metrics exporter reports open fixable criticals of running images",
}
DEMO_IMPORTERS = {
    "gsv_pipelines.cli": "the `gsv` command line dispatches `gsv seed`, `demo` and `dev` to it"
}
# Test modules of lib/ and demo/ that test more than the one module their name mirrors.
NOT_ONE_MODULE = {
    "tests/lib/rotation/rotators/test_vault_engines.py": "the two rotators of Vault's own "
    "engines, transit.py and vault_database.py, against one OpenBao",
}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The gsv_pipelines modules `path` imports (a `from x import y` counts x.y when y is one)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                module_path = PACKAGE.parent / Path(*candidate.split("."))
                is_module = module_path.with_suffix(".py").exists() or module_path.is_dir()
                found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("gsv_pipelines")}


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_a_domain_imports_the_shared_package_and_itself_only_but_the_listed_exceptions():
    found = set()
    for path in _modules(LIB):
        domain = path.relative_to(LIB).parts[0]
        for imported in _imports(path):
            parts = imported.split(".")
            if parts[:2] != ["gsv_pipelines", "lib"] or len(parts) < 3:
                continue
            other = parts[2]
            if domain == "core":
                assert other == "core", f"{_name(path)} (core) imports the domain {other}"
            elif other not in ("core", domain):
                found.add((domain, other))
    assert found == set(EXCEPTIONS)
    assert all(reason.strip() for reason in EXCEPTIONS.values())


def test_no_production_module_imports_the_demo():
    importers = {
        _name(path)
        for path in _modules(PACKAGE)
        if "demo" not in path.relative_to(PACKAGE).parts[:1]
        and any(name.startswith("gsv_pipelines.demo") for name in _imports(path))
    }
    assert importers == set(DEMO_IMPORTERS)


def test_the_top_level_imports_form_no_cycle():
    graph = {_name(p): _imports(p, top_level_only=True) for p in _modules(PACKAGE)}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", " -> ".join([*trail, module])
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if imported in graph and imported != module:
                visit(imported, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_tests_mirror_the_package():
    """Each test module of tests/lib and tests/demo sits at the path of the module it tests."""
    strays = []
    for folder in (TESTS / "lib", TESTS / "demo"):
        for test in sorted(folder.rglob("test_*.py")):
            relative = test.relative_to(TESTS)
            module = PACKAGE / relative.parent / f"{test.stem.removeprefix('test_')}.py"
            if not module.exists() and str(test.relative_to(TESTS.parent)) not in NOT_ONE_MODULE:
                strays.append(f"{relative}: no {module.relative_to(PACKAGE.parent)}")
    assert strays == []
    for test in NOT_ONE_MODULE:
        assert (TESTS.parent / test).exists(), test
