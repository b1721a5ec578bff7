#!/usr/bin/env python3
"""Finds import cycles between the library's modules; exits 1 when there is one (CI runs it: .ci/run).

Granularity: a top-level module and its first-level children (`engine`, `engine::cuda`, `cpu::sampler`,
`scheduler`), the level at which issue 20 names the cycles it breaks. A file deeper down counts as its
first-level ancestor (src/engine/emu/norm.rs is `engine::emu`).

An edge A → B is any path in A's code (not its comments or strings) that names something in B: `use crate::…`
lines, groups `use crate::{x::y, z}`, paths written inline (`crate::gpu::arena::f`), `super::…`, and paths through
a child module (`cuda::StepGraphReport` in src/engine/mod.rs). Paths through a re-export (`crate::Result`,
`crate::engine::StorageDtype`) count against the module that defines the name, not the one that re-exports it, and a
parent's `pub use child::Name` is its facade, not a dependency. The crate root (src/lib.rs) is a facade only; the
binary (src/bin/) uses the library from outside and is not scanned.

Usage: python3 tools/module_cycles.py [SRC_DIR]      (default: src/ beside this tool's folder)
       python3 tools/module_cycles.py --edges         (also prints every edge with its first file:line)
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """The code with comments, string and char literals blanked (newlines kept, so line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.[^']*|[^'\\])'", text[i:])):
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def inline_modules(code):
    """(name, start, end) of every inline `mod name { … }` block, outermost first."""
    blocks = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        blocks.append((m.group(1), m.start(), j))
    return blocks


def module_of(path, src):
    """src/engine/cuda/mod.rs → ('engine', 'cuda'); src/lib.rs → ()."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


def use_trees(code):
    """(is_pub, tree, line) for every `use` item: tree is the text after `use` up to its `;`."""
    for m in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]*);", code):
        tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+", "@", m.group(2)))  # `a as b` → `a@b`
        yield bool(m.group(1)), tree, code.count("\n", 0, m.start()) + 1, m.start()


def expand(tree):
    """`a::{b::c, d@e, self}` → ['a::b::c', 'a::d@e', 'a'] (`d@e`: `d as e`; globs kept as `*`)."""
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    items, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:k])
            start = k + 1
    items.append(inner[start:])
    paths = []
    for item in filter(None, items):
        for sub in expand(item):
            paths.append(prefix.rstrip(":") if sub == "self" else prefix + sub)
    return paths


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path → stripped code
        for path in sorted(src.rglob("*.rs")):
            if path.relative_to(src).parts[0] == "bin":
                continue
            self.files[module_of(path, src)] = (path, strip_comments_and_strings(path.read_text()))
        self.modules = set(self.files)
        for m in list(self.files):  # every ancestor of a file's module is a module
            for k in range(len(m)):
                self.modules.add(m[:k])
        # Re-exports: module → {name: absolute path it names}.
        self.reexports = {}
        for module, (_, code) in self.files.items():
            for is_pub, tree, _, _ in use_trees(code):
                if not is_pub:
                    continue
                for p in expand(tree):
                    p, _, alias = p.partition("@")
                    target = self.absolute(module, p.split("::"))
                    if target is not None and target and target[-1] != "*":
                        self.reexports.setdefault(module, {})[alias or target[-1]] = target

    def absolute(self, module, parts):
        """The absolute path (tuple) `parts`, written in `module`, names; None for paths outside the crate."""
        parts = [p for p in parts if p]
        if not parts:
            return None
        head = parts[0]
        if head == "crate":
            return tuple(parts[1:])
        if head == "self":
            return module + tuple(parts[1:])
        if head == "super":
            base = list(module)
            while parts and parts[0] == "super":
                base.pop()
                parts = parts[1:]
            return tuple(base) + tuple(parts)
        if module + (head,) in self.modules:  # a child module
            return module + tuple(parts)
        return None

    def resolve(self, path, hops=0):
        """The module an absolute path's item lives in, following re-exports."""
        module = ()
        for k, seg in enumerate(path):
            if module + (seg,) in self.modules:
                module = module + (seg,)
                continue
            target = self.reexports.get(module, {}).get(seg)
            if target is not None and hops < 8 and target != module + (seg,):
                return self.resolve(target + tuple(path[k + 1 :]), hops + 1)
            break
        return module

    def edges(self):
        """{(from_node, to_node): 'file:line'} at the first-level-child granularity."""
        found = {}
        for module, (path, code) in self.files.items():
            if not module:
                continue
            refs, imported = [], {}
            inline = inline_modules(code)
            for is_pub, tree, line, pos in use_trees(code):
                here_module = module + tuple(name for name, a, b in inline if a <= pos < b)
                for p in expand(tree):
                    p, _, alias = p.partition("@")
                    target = self.absolute(here_module, p.split("::"))
                    if target is None:
                        continue
                    imported[alias or target[-1]] = target
                    # A parent's `pub use child::Name` is its facade, and importing a module is no use of it by
                    # itself (the paths through it are).
                    if (is_pub and target[: len(module)] == module) or target in self.modules:
                        continue
                    refs.append((target, line))
            no_use = re.sub(r"\buse\s+[^;]*;", lambda m: "\n" * m.group(0).count("\n"), code)
            for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:" + IDENT + r")(?:::" + IDENT + r")+)", no_use):
                parts = m.group(1).split("::")
                if parts[0] in imported:
                    target = imported[parts[0]] + tuple(parts[1:])
                else:
                    here_module = module + tuple(name for name, a, b in inline if a <= m.start() < b)
                    target = self.absolute(here_module, parts)
                if target is not None:
                    refs.append((target, no_use.count("\n", 0, m.start()) + 1))
            here = node(module)
            for target, line in refs:
                there = node(self.resolve(target))
                if there and there != here and (here, there) not in found:
                    found[(here, there)] = f"{path}:{line}"
        return found


# The leaf vocabulary (src/vocabulary/) may reach, directly or not, only itself and these modules.
LEAF = "vocabulary"
LEAF_MAY_REACH = {"error", "tensor"}


def leaf_violations(edges):
    """Edges by which the leaf vocabulary reaches a module outside LEAF_MAY_REACH."""
    inside = lambda n: n == LEAF or n.startswith(LEAF + "::")
    reached, frontier, bad = set(), [n for e in edges for n in e if inside(n)], []
    while frontier:
        here = frontier.pop()
        if here in reached:
            continue
        reached.add(here)
        for (a, b), where in sorted(edges.items()):
            if a == here:
                if inside(b) or b in LEAF_MAY_REACH:
                    frontier.append(b)
                else:
                    bad.append(f"  {a} -> {b}    ({where})")
    return bad


def node(module):
    return "::".join(module[:2])


def strongly_connected(nodes, edges):
    """Tarjan's algorithm: the components with more than one node."""
    graph = {v: sorted(b for a, b in edges if a == v) for v in nodes}
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "src"
    crate = Crate(src)
    edges = crate.edges()
    nodes = {n for e in edges for n in e}
    if "--edges" in sys.argv:
        for (a, b), where in sorted(edges.items()):
            print(f"{a} -> {b}    ({where})")
    cycles = strongly_connected(nodes, edges)
    for component in cycles:
        print(f"import cycle among {', '.join(component)}:", file=sys.stderr)
        for (a, b), where in sorted(edges.items()):
            if a in component and b in component:
                print(f"  {a} -> {b}    ({where})", file=sys.stderr)
    bad = leaf_violations(edges)
    if bad:
        print(f"the leaf module `{LEAF}` reaches beyond {', '.join(sorted(LEAF_MAY_REACH))}:", file=sys.stderr)
        print("\n".join(bad), file=sys.stderr)
    if cycles or bad:
        sys.exit(1)
    print(f"no import cycle among {len(nodes)} modules ({len(edges)} edges)")


if __name__ == "__main__":
    main()
