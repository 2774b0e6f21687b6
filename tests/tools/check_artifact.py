"""Check what `ansible-galaxy collection build` put into the artifact: the collection a user
installs (modules, role, plugin, SELinux sources, playbooks, the example inventory, docs)
and nothing of the development tree (tests, lab, caches such as ansible-lint's .ansible/).

    python tests/tools/check_artifact.py ARTIFACT.tar.gz
"""

import sys
import tarfile

# The top-level entries a user needs; anything else in the artifact is a leak.
EXPECTED = {
    "FILES.json", "MANIFEST.json", "README.md", "changelogs", "docs", "files", "inventory",
    "meta", "playbooks", "plugins", "roles", "selinux",
}


def main(path: str) -> int:
    with tarfile.open(path) as artifact:
        names = [member.name for member in artifact.getmembers() if not member.isdir()]
    top = {}
    for name in names:
        top.setdefault(name.split("/", 1)[0], []).append(name)
    for entry in sorted(top):
        print(f"{entry}: {len(top[entry])} files")
    unexpected = sorted(set(top) - EXPECTED)
    missing = sorted(EXPECTED - set(top))
    if unexpected or missing:
        print(f"check_artifact: {path}: unexpected {unexpected}, missing {missing}", file=sys.stderr)
        return 1
    print(f"check_artifact: {len(names)} files, only what a user needs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
