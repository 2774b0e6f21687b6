"""The floor: what reading the stream costs in Python before anything looks at it. Reads
stdin as lines (the stream split at its newlines), nothing else; prints the line count."""

import sys

lines = 0
for _line in sys.stdin.buffer:
    lines += 1
print(lines)
