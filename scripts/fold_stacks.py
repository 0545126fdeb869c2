"""`perf script` output on standard input -> folded stacks on standard output.

One line per distinct stack, `root;caller;...;leaf COUNT`, the input of flame graph tools
(inferno-flamegraph, flamegraph.pl). Used by scripts/profile.sh.
"""
import collections
import re
import sys


def main() -> None:
    stacks: collections.Counter[str] = collections.Counter()
    frames: list[str] = []
    for line in sys.stdin:
        if not line.strip():
            if frames:
                stacks[";".join(reversed(frames))] += 1
                frames = []
            continue
        if line[0] in " \t":
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                symbol = re.sub(r"\+0x[0-9a-f]+", "", parts[1])
                frames.append(re.sub(r" \([^()]*\)$", "", symbol))
    if frames:
        stacks[";".join(reversed(frames))] += 1
    for stack, count in stacks.most_common():
        print(stack, count)


if __name__ == "__main__":
    main()
