"""The package's shape (issue #20): modules of at most 600 lines, imports that run one way
(no cycle), a program that is only a launcher, and a role that installs every directory."""

import ast
from pathlib import Path

import yaml
from conftest import FILES, ROOT

PACKAGE = FILES / "mailalert"
MAX_LINES = 600


def modules() -> dict:
    """Each module's dotted name (mailalert.x.y) -> its path."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(FILES).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set:
    """The package's modules that a module imports (relative imports, resolved)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    known, found = modules(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            for alias in node.names:  # `from . import sifter` names a module
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return found - {name}


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_imports_run_one_way():
    graph = {name: imports(name, path) for name, path in modules().items()}
    assert all(target in graph for targets in graph.values() for target in targets), graph
    done, active = set(), []

    def visit(name):
        assert name not in active, "import cycle: " + " -> ".join(active[active.index(name):] + [name])
        if name in done:
            return
        active.append(name)
        for target in sorted(graph[name]):
            visit(target)
        active.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: config importing cli closes a cycle."""
    original = imports
    monkeypatch.setitem(globals(), "imports", lambda name, path: original(name, path)
                        | ({"mailalert.cli"} if name == "mailalert.config" else set()))
    try:
        test_imports_run_one_way()
    except AssertionError as error:
        assert "import cycle" in str(error)
    else:
        raise AssertionError("a cycle went unseen")


def test_the_program_is_a_launcher():
    tree = ast.parse((FILES / "audisp_mailalert.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"os", "sys", "mailalert", "mailalert.cli"}
    assert len((FILES / "audisp_mailalert.py").read_text().splitlines()) < 60


def test_the_role_installs_every_directory_of_the_package():
    role_vars = yaml.safe_load((ROOT / "roles" / "audit_mail_alert" / "vars" / "main.yml").read_text())
    directories = {str(path.parent.relative_to(FILES)) for path in PACKAGE.rglob("*.py")}
    assert set(role_vars["__audit_mail_alert_package_dirs"]) == directories
