#!/usr/bin/env python3
"""Checks that no two top-level modules of src/ import each other, directly or through others.

A module's imports are the `crate::<module>` paths in its files (comments and test modules left
out: a test may use anything). Prints each module's imports with `-v`; exits 1 on a cycle.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def root_items():
    """The items lib.rs re-exports (`pub use crate::<module>::<Item>`), by name."""
    text = open(os.path.join(ROOT, "lib.rs")).read()
    items = {}
    for module, names in re.findall(r"pub use crate::([a-z_]+)::\{?([^;}]*)\}?;", text):
        for name in re.findall(r"[A-Z][A-Za-z]+", names):
            items[name] = module
    return items


ROOT_ITEMS = root_items()


def imports():
    mods = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top == "lib":
                continue
            text = open(os.path.join(dirpath, f)).read()
            test = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
            if test:
                text = text[: test.start()]
            text = re.sub(r"//[^\n]*", "", text)
            found = set(re.findall(r"crate::([a-z_]+)", text))
            # `use crate::{a::B, c, D}`: each name in the group.
            for group in re.findall(r"crate::\{([^;]*)\}", text):
                found.update(re.findall(r"(?:^|[{,\s])([a-z_]+)(?=::|\s*[,}]|\s*$)", group))
            # Items the crate root re-exports, by the module they come from.
            for name in re.findall(r"crate::\{?[^;]*?\b([A-Z][A-Za-z]+)\b", text):
                found.add(ROOT_ITEMS.get(name, ""))
            found.discard("")
            mods.setdefault(top, set()).update(found - {top})
    for m in mods:
        mods[m] &= set(mods)
    return mods


def cycles(mods):
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in mods[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return out


def main():
    mods = imports()
    if "-v" in sys.argv:
        for m in sorted(mods):
            print(f"{m} -> {', '.join(sorted(mods[m])) or '(nothing)'}")
    found = cycles(mods)
    if found:
        for group in found:
            print("modules that import each other:", ", ".join(group))
        sys.exit(1)
    print(f"no cycle between the {len(mods)} top-level modules")


if __name__ == "__main__":
    main()
