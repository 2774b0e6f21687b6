"""Check what `ansible-galaxy collection build` put into the artifact: the collection a user
installs (modules, role, plugin, SELinux sources, playbooks, the example inventory, docs,
the licence and the changelog) and of the tests only ansible-test's config and ignore files that
ansible-test needs to pass on the artifact; nothing else of the development tree (the
other tests, lab, caches such as ansible-lint's .ansible/ or antsibull-changelog's
.plugin-cache.yaml); and that it holds the files meta/execution-environment.yml names
for ansible-builder.

    python tests/tools/check_artifact.py ARTIFACT.tar.gz
"""

import re
import sys
import tarfile

import yaml

# The top-level entries a user needs; anything else in the artifact is a leak.
EXPECTED = {
    "CHANGELOG.rst", "COPYING", "FILES.json", "MANIFEST.json", "README.md", "changelogs",
    "docs", "files", "inventory", "meta", "playbooks", "plugins", "roles", "selinux", "tests",
}
# Of tests/, only ansible-test's config (Galaxy and Automation Hub run its sanity tests on the
# artifact; it ships no ignore file); of changelogs/, only what antsibull-changelog keeps for users.
ALLOWED_UNDER = {
    "tests": re.compile(r"tests/config\.yml"),
    "changelogs": re.compile(r"changelogs/(changelog\.yaml|config\.yaml|fragments/([\w.-]+\.ya?ml|\.keep))"),
}
# ansible-builder reads this file in the installed collection and opens the files it names:
# all of them must be in the artifact (tests/unit/meta/test_execution_environment.py checks
# their content).
EE_FILE = "meta/execution-environment.yml"


def ee_files_missing(artifact: tarfile.TarFile, names: list[str]) -> list[str]:
    """The files an execution environment build needs that the artifact lacks."""
    if EE_FILE not in names:
        return [EE_FILE]
    data = yaml.safe_load(artifact.extractfile(EE_FILE))
    named = [value for value in data["dependencies"].values() if isinstance(value, str)]
    return [name for name in named if name not in names]


def main(path: str) -> int:
    with tarfile.open(path) as artifact:
        names = [member.name for member in artifact.getmembers() if not member.isdir()]
        ee_missing = ee_files_missing(artifact, names)
    top = {}
    for name in names:
        top.setdefault(name.split("/", 1)[0], []).append(name)
    for entry in sorted(top):
        print(f"{entry}: {len(top[entry])} files")
    unexpected = sorted(set(top) - EXPECTED)
    unexpected += sorted(name for entry, pattern in ALLOWED_UNDER.items()
                         for name in top.get(entry, []) if not pattern.fullmatch(name))
    missing = sorted(EXPECTED - set(top))
    if unexpected or missing:
        print(f"check_artifact: {path}: unexpected {unexpected}, missing {missing}", file=sys.stderr)
        return 1
    if ee_missing:
        print(f"check_artifact: {path}: ansible-builder needs {ee_missing}", file=sys.stderr)
        return 1
    print(f"check_artifact: {len(names)} files, only what a user needs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
