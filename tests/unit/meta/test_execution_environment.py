"""meta/execution-environment.yml: what ansible-builder reads when it puts this collection
into an execution environment (AWX, Ansible Automation Platform). ansible-builder opens each
file named there relative to the collection root and hands its lines to pip (python) and
bindep (system): a missing file or a line they cannot read breaks the user's image build,
so it breaks this test first. tests/tools/check_artifact.py checks that the files reach
the built artifact."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement

ROOT = Path(__file__).resolve().parents[3]
EE_FILE = "meta/execution-environment.yml"
# The keys ansible-builder reads in a collection's file (galaxy belongs to the user's own
# execution-environment.yml, not to a collection's).
KINDS = ("python", "system")
# A bindep line: a package name, then optionally [profiles or platform selectors] and
# version constraints, e.g. "openssh-clients [platform:rpm]" or "libfoo >=1.2".
BINDEP_LINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]*( \[[!A-Za-z0-9:._ -]+\])?( [<>=!]=?\S+)*")


def ee_problems(root: Path) -> list[str]:
    """Every problem ansible-builder would meet in ROOT's file, each naming its field."""
    try:
        data = yaml.safe_load((root / EE_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        return [f"{EE_FILE}: {error}"]
    dependencies = data.get("dependencies") if isinstance(data, dict) else None
    if not isinstance(dependencies, dict) or not dependencies:
        return [f"{EE_FILE}: dependencies: must map python and/or system to a file"]
    problems = [f"dependencies.{kind}: not read by ansible-builder in a collection"
                for kind in sorted(set(dependencies) - set(KINDS))]
    for kind in KINDS:
        if kind in dependencies:
            problems += file_problems(root, kind, dependencies[kind])
    return problems


def file_problems(root: Path, kind: str, name: object) -> list[str]:
    """The problems of one requirements file: where it is, then each of its lines."""
    field = f"dependencies.{kind}"
    if not isinstance(name, str) or not name:
        return [f"{field}: must be a file path relative to the collection root"]
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return [f"{field}: {name}: must be relative to the collection root, inside it"]
    path = root / name
    if not path.is_file():
        return [f"{field}: {name} does not exist"]
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line and not line_is_valid(kind, line):
            problems.append(f"{field}: {name}:{number}: not a {kind} requirement: {line!r}")
    return problems


def line_is_valid(kind: str, line: str) -> bool:
    if kind == "system":
        return BINDEP_LINE.fullmatch(line) is not None
    try:
        Requirement(line)
    except InvalidRequirement:
        return False
    return True


def test_the_collection_file_is_what_ansible_builder_reads():
    assert ee_problems(ROOT) == []


def test_the_controller_needs_only_an_ssh_client():
    # The targets' packages (python3-audit, auditd, an MTA) are the role's business: an
    # execution environment that carried them would only grow.
    data = yaml.safe_load((ROOT / EE_FILE).read_text(encoding="utf-8"))
    system = (ROOT / data["dependencies"]["system"]).read_text(encoding="utf-8")
    packages = [line.split()[0] for line in system.splitlines()
                if line and not line.startswith("#")]
    assert packages == ["openssh-client", "openssh-clients"]


# Each broken case: the execution-environment.yml text (None: the collection's own), a
# requirements file to overwrite (None: none), and the start of the one problem expected.
BROKEN = {
    "yaml": ("dependencies: [python", None, f"{EE_FILE}: "),
    "no dependencies": ("version: 1\n", None,
                        f"{EE_FILE}: dependencies: must map python and/or system"),
    "unknown key": ("dependencies: {galaxy: meta/ee-requirements.txt}\n", None,
                    "dependencies.galaxy: not read by ansible-builder in a collection"),
    "missing file": ("dependencies: {python: meta/nothing.txt}\n", None,
                     "dependencies.python: meta/nothing.txt does not exist"),
    "absolute path": ("dependencies: {system: /etc/bindep.txt}\n", None,
                      "dependencies.system: /etc/bindep.txt: must be relative"),
    "bad python line": (None, ("meta/ee-requirements.txt", "auparse ~~ 3\n"),
                        "dependencies.python: meta/ee-requirements.txt:1: not a python"),
    "bad bindep line": (None, ("meta/ee-bindep.txt", "openssh-clients [platform:rpm\n"),
                        "dependencies.system: meta/ee-bindep.txt:1: not a system"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_file_is_refused_naming_the_field(tmp_path, case):
    ee_text, requirement, expected = BROKEN[case]
    shutil.copytree(ROOT / "meta", tmp_path / "meta")
    if ee_text is not None:
        (tmp_path / EE_FILE).write_text(ee_text, encoding="utf-8")
    if requirement is not None:
        (tmp_path / requirement[0]).write_text(requirement[1], encoding="utf-8")
    problems = ee_problems(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
