"""No function of the product's Python over MAX_LINES lines without a reason (issue #12).

A function may be longer when the line just above its `def` (or above its decorators) is
a comment `# long: REASON`, e.g. a module's main() that follows its DOCUMENTATION.

usage: python tests/tools/check_function_length.py PATH...   (files or directories)
Prints each function that breaks the rule and exits 1 if there is one.
"""

import ast
import sys
from pathlib import Path

MAX_LINES = 60
REASON = "# long:"


def python_files(paths):
    for path in map(Path, paths):
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def too_long(path: Path):
    """(line, name, length) of each function in the file that is too long without a reason."""
    text = path.read_text()
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - first + 1
            above = lines[first - 2].strip() if first > 1 else ""
            if length > MAX_LINES and not above.startswith(REASON):
                yield node.lineno, node.name, length


def main(paths) -> int:
    found = 0
    for path in python_files(paths):
        for line, name, length in too_long(path):
            print(f"{path}:{line}: {name} is {length} lines (at most {MAX_LINES}, "
                  f"or a '{REASON} REASON' comment above it)")
            found += 1
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
