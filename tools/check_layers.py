#!/usr/bin/env python3
"""check_layers.py [--allow-shim] CSRC_DIR

Fails (exit 1) when a C file of csrc/ uses a layer its own layer may not use:
an #include "layer/x.h" of a layer not in its ALLOWED list, or a call to (or
use of) a non-static symbol defined in such a layer. Also fails on a C file
outside the layer folders (csrc/tidal.h, the public header, is the only file
allowed at the top) and on any cycle between folders. --allow-shim accepts
#include "tidal_int.h" (the transitional all-in-one header) while the move is
under way; the final tree must pass without it.
"""
import os, re, sys
from collections import defaultdict

# What each layer may use besides itself. Keep in sync with the README's
# layout section. The relation must stay acyclic (checked below).
ALLOWED = {
    "xfer": [],
    "auxlib": [],
    "kernel": ["auxlib"],
    "flow": ["kernel", "auxlib"],
    "sync": ["flow", "kernel", "auxlib", "xfer"],
    "parallel": ["kernel", "auxlib", "xfer"],
    "http": ["kernel", "auxlib", "xfer"],
    "io": ["flow", "kernel", "auxlib", "xfer"],
    "lib": ["io", "http", "parallel", "sync", "flow", "kernel", "auxlib", "xfer"],
    "test": ["xfer"],  # the test-only module, never linked into tidal.core
}
PUBLIC = {"tidal.h"}
SHIM = "tidal_int.h"

args = [a for a in sys.argv[1:] if not a.startswith("--")]
allow_shim = "--allow-shim" in sys.argv
root = args[0] if args else "csrc"
errors = []

def strip(s):  # comments and string literals out: no false calls
    s = re.sub(r"/\*.*?\*/", "", s, flags=re.S)
    s = re.sub(r"//[^\n]*", "", s)
    return re.sub(r'"(\\.|[^"\\\n])*"', '""', s)

files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith((".c", ".h")):
            rel = os.path.relpath(os.path.join(d, f), root)
            files[rel] = open(os.path.join(d, f), errors="replace").read()

def layer(rel):
    parts = rel.split(os.sep)
    return parts[0] if len(parts) > 1 else None

for rel in sorted(files):
    lay = layer(rel)
    if lay is None:
        if rel in PUBLIC or (allow_shim and rel == SHIM):
            continue
        errors.append(f"{rel}: outside the layer folders")
    elif lay not in ALLOWED:
        errors.append(f"{rel}: unknown layer folder '{lay}' (add it to ALLOWED)")

def may_use(a, b):
    return a == b or b in ALLOWED.get(a, [])

# 1. includes
uses = defaultdict(set)
for rel, text in files.items():
    me = layer(rel) or "."
    if allow_shim and rel == SHIM:
        continue  # the shim includes every layer's header, by design
    for inc in re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, re.M):
        if inc in PUBLIC or (allow_shim and inc == SHIM):
            continue
        if inc.startswith((".", "/")):
            errors.append(f'{rel}: #include "{inc}": spell it "layer/x.h" (one include path, csrc)')
            continue
        if "/" not in inc:
            if not os.path.exists(os.path.join(root, os.path.dirname(rel), inc)):
                errors.append(f'{rel}: #include "{inc}": not in its own folder '
                              '(spell other layers\' headers "layer/x.h")')
            continue
        target = inc.split("/")[0]
        if not may_use(me, target):
            errors.append(f'{rel}: #include "{inc}": {me} may not use {target}')
        uses[me].add(target)

# 2. symbols: non-static functions and objects, by the layer defining them
defs = {}
for rel, text in files.items():
    if not rel.endswith(".c"):
        continue
    s = strip(text)
    for m in re.finditer(r"^(?!static\b)[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)\s*\([^;{]*\)\s*\{", s, re.M):
        defs.setdefault(m.group(1), rel)
    for m in re.finditer(r"^(?!static\b)(?:const\s+)?(?:struct\s+)?\w+\s*\*?\s*(tidal_\w+|http_\w+)\s*(?:\[[^\]]*\])?\s*=", s, re.M):
        defs.setdefault(m.group(1), rel)
for rel, text in files.items():
    if not rel.endswith(".c"):
        continue
    me = layer(rel) or "."
    s = strip(text)
    starts = [(m.start(), m.group(1)) for m in re.finditer(
        r"^[A-Za-z_][\w \t\*]*?\b(\w+)\s*\([^;{]*\)\s*\{", s, re.M)]
    seen = set()
    for m in re.finditer(r"\b([A-Za-z_]\w*)\b", s):
        g = defs.get(m.group(1))
        if g is None or g == rel:
            continue
        them = layer(g) or "."
        if them == me:
            continue
        uses[me].add(them)
        if may_use(me, them):
            continue
        caller = "(file scope)"
        for p, name in starts:
            if p <= m.start():
                caller = name
        key = (rel, caller, g, m.group(1))
        if key not in seen:
            seen.add(key)
            errors.append(f"{rel}:{caller} -> {g}:{m.group(1)} ({me} may not use {them})")

# 2b. names a layer's headers define (types, struct tags, enum constants,
# macros): a lower layer naming them knows the layer above (e.g. a
# forward-declared "struct tidal_group *" in a kernel struct).
hdr_names = {}
for rel, text in files.items():
    if not rel.endswith(".h") or layer(rel) is None:
        continue
    s = strip(text)
    lay = layer(rel)
    names = set(re.findall(r"^\s*#\s*define\s+([A-Za-z_]\w*)", s, re.M))
    names -= {n for n in names if n.endswith("_H")}  # include guards
    names |= set(re.findall(r"\btypedef\b[^;{]*?(?:\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})?\s*\**\s*([A-Za-z_]\w*)\s*;", s))
    names |= {"struct " + t for t in re.findall(r"\bstruct\s+([A-Za-z_]\w*)\s*\{", s)}
    for body in re.findall(r"\benum\b[^{;]*\{([^}]*)\}", s):
        names |= set(re.findall(r"(?:^|,)\s*([A-Za-z_]\w*)", body))
    # reserved names (_DEFAULT_SOURCE, _GNU_SOURCE: feature-test macros
    # every layer may define) belong to no layer
    names = {n for n in names if not re.match(r"_[A-Z_]", n)}
    for n in names:
        hdr_names.setdefault(n, []).append((lay, rel))
for rel, text in files.items():
    me = layer(rel)
    if me is None:
        continue
    s = strip(text)
    found = set(re.findall(r"\b([A-Za-z_]\w*)\b", s))
    found |= {"struct " + t for t in re.findall(r"\bstruct\s+([A-Za-z_]\w*)", s)}
    for n in sorted(found):
        where = hdr_names.get(n, [])
        if not where or any(lay == me for lay, _ in where):
            continue  # unknown, or its own layer defines it too
        ok = [(lay, w) for lay, w in where if may_use(me, lay)]
        lay, w = (ok or where)[0]
        uses[me].add(lay)
        if not ok:
            errors.append(f"{rel}: names {n} of {w} ({me} may not use {lay})")

# 3. cycles between folders (actual uses), and in ALLOWED itself
def cycle(graph):
    state, stack = {}, []
    def visit(v):
        state[v] = 1; stack.append(v)
        for w in graph.get(v, ()):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                c = visit(w)
                if c: return c
        state[v] = 2; stack.pop()
        return None
    for v in list(graph):
        if v not in state:
            c = visit(v)
            if c: return c
    return None
c = cycle({k: set(v) - {k} for k, v in uses.items()})
if c: errors.append("cycle between folders: " + " -> ".join(c))
c = cycle({k: set(v) for k, v in ALLOWED.items()})
if c: errors.append("ALLOWED has a cycle: " + " -> ".join(c))

for e in errors:
    print(e)
print("layer uses:", "; ".join(f"{a} -> {', '.join(sorted(b - {a}))}"
                                for a, b in sorted(uses.items()) if b - {a}))
print(f"{len(errors)} violation(s)" if errors else "layers OK: no upward include or call, no cycle")
sys.exit(1 if errors else 0)
