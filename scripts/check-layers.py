#!/usr/bin/env python3
"""The layers of the library (shared/src) as its code imports them.

Reads every `crate::`/`super::` path of every file (use trees and paths written inline), maps
each file and each path to a layer node, and fails when:
  - a node imports a node its layer may not reach (the table RULES: each node's allowed nodes),
  - two nodes import each other through any chain (an import circle).
`--graph` prints the edges with one file:line for each, as docs/architecture.md draws them.
`--self-test` checks the parser and the rules on small samples first.
"""
import os
import re
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "src")

ADAPTERS = {"store", "stripe", "secrets", "events", "net", "outbound", "queue"}
TOP = {"handlers", "services", "domain", "jobs", "api", "app", "auth", "calls", "config",
       "http", "runtime", "scoping", "telemetry", "openapi", "formats"}

# Each node, and the nodes it may import. Below the edge (http, api, auth, scoping) nothing
# knows HTTP; adapters know only the domain and their own plumbing; the domain knows nothing.
BASE = {"domain"}
RULES = {
    "domain": set(),
    "config": BASE,
    "telemetry": BASE,
    "calls": BASE | {"config"},
    "adapters::net": set(),
    "adapters::secrets": BASE | {"calls", "config", "telemetry"},
    "adapters::events": BASE | {"calls", "telemetry"},
    "adapters::queue": BASE | {"calls", "telemetry"},
    "adapters::outbound": BASE | {"adapters::net", "telemetry"},
    "adapters::store": BASE | {"calls", "telemetry"},
    "adapters::stripe": BASE | {"adapters::net", "calls", "telemetry"},
    "app": BASE | {"adapters::net", "adapters::secrets", "adapters::events", "adapters::store",
                   "adapters::stripe", "adapters::queue", "adapters::outbound", "calls",
                   "config", "telemetry"},
    "services": BASE | {"app", "adapters::events", "adapters::store", "adapters::stripe",
                        "adapters::secrets", "adapters::queue", "adapters::outbound", "calls",
                        "config", "telemetry"},
    # The HTTP edge: the envelope and errors, wire types, identity, the request's scope.
    "api": BASE,
    "auth": BASE | {"http"},
    "http": BASE | {"services", "telemetry"},
    "scoping": BASE | {"app", "auth", "http", "services"},
    # Handlers parse, call a use case and answer: never an adapter.
    "handlers": BASE | {"api", "app", "auth", "http", "scoping", "services", "telemetry"},
    "jobs": BASE | {"app", "services", "telemetry"},
    # The project's response format, applied to every end-user answer after its handler.
    "formats": BASE | {"app", "http", "scoping"},
    "runtime": {"app", "formats", "telemetry", "config"},
    "openapi": BASE | {"api", "formats", "handlers", "http", "adapters::stripe", "services"},
}


def module_path(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def node_of(parts):
    if not parts:
        return None
    head = parts[0]
    if head == "App":
        return "app"
    if head == "adapters":
        if len(parts) > 1 and parts[1] in ADAPTERS:
            return "adapters::" + parts[1]
        return None
    return head if head in TOP else None


def strip_comments(text):
    """Blanks `//` comments and string literals, keeping line numbers."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == '"' and not (i > 0 and text[i - 1] == "'"):
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, e}}` → [[a, b], [a, c, d], [a, c, e]]."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    depth, parts, cur = 0, [], ""
    if tree.startswith("{") and tree.endswith("}"):
        inner = tree[1:-1]
        for ch in inner:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        return [p for part in parts for p in expand(part)]
    if "::{" in tree:
        prefix, rest = tree.split("::{", 1)
        return [prefix.split("::") + p for p in expand("{" + rest)]
    return [tree.split("::")]


def references(rel, text):
    """(line, absolute module path) for every crate-internal path the file names."""
    here = module_path(rel)
    found = []

    def resolve(path, line):
        if path[0] == "crate":
            found.append((line, path[1:]))
        elif path[0] == "super":
            base = list(here)
            while path and path[0] == "super":
                base = base[:-1]
                path = path[1:]
            found.append((line, base + path))
        elif path[0] == "self":
            found.append((line, here + path[1:]))

    for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", text):
        line = text.count("\n", 0, m.start()) + 1
        for path in expand(m.group(1)):
            resolve(path, line)
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        # Inline paths (use trees were read above; reading them again adds nothing new).
        line = text.count("\n", 0, m.start()) + 1
        resolve(m.group(1).split("::"), line)
    return found


def edges(root):
    result = defaultdict(list)
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            source = node_of(module_path(rel))
            if source is None:
                continue
            text = strip_comments(open(full, encoding="utf-8").read())
            for line, path in references(rel, text):
                target = node_of(path)
                place = f"{rel}:{line}"
                if target and target != source and place not in result[(source, target)]:
                    result[(source, target)].append(place)
    return result


def circles(graph):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    nodes = sorted({a for a, _ in graph} | {b for _, b in graph})
    succ = defaultdict(list)
    for a, b in graph:
        succ[a].append(b)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


# What a handler may not call even through `App`: the store, Stripe and secrets are reached
# through a use case in `services`.
FORBIDDEN_IN_HANDLERS = re.compile(
    r"\bapp\s*\.\s*(store_for|store|stripe_for|secrets_for|refresh_secrets|project_secrets"
    r"|secrets|packages_for|project)\b")


def handler_calls(root):
    found = []
    folder = os.path.join(root, "handlers")
    for name in sorted(os.listdir(folder)):
        text = strip_comments(open(os.path.join(folder, name), encoding="utf-8").read())
        for m in FORBIDDEN_IN_HANDLERS.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"handlers must not call app.{m.group(1)}: handlers/{name}:{line}")
    return found


def problems(graph):
    found = []
    for (a, b), where in sorted(graph.items()):
        allowed = RULES.get(a)
        if allowed is None:
            found.append(f"{a} is not a known layer ({where[0]})")
        elif b not in allowed:
            found.append(f"{a} must not import {b}: {', '.join(where[:3])}")
    for comp in circles(graph):
        found.append("import circle: " + " ↔ ".join(comp))
    return found


def self_test():
    assert expand("a::{b, c::{d, e as f}}") == [["a", "b"], ["a", "c", "d"], ["a", "c", "e"]]
    sample = 'use crate::{app::App, domain::{money::X}};\nfn f() { crate::http::ok(); "crate::jobs"; }\n'
    refs = references("services/x.rs", strip_comments(sample))
    assert [p[0] for _, p in refs] == ["app", "domain", "http"], refs
    assert references("services/a/b.rs", "use super::super::super::jobs::X;")[0][1][0] == "jobs"
    bad = {("services", "http"): ["x:1"], ("domain", "app"): ["y:2"], ("app", "domain"): ["z:3"]}
    found = problems(bad)
    assert any("services must not import http" in p for p in found), found
    assert any("circle" in p for p in found), found
    assert not problems({("handlers", "services"): ["a:1"], ("services", "domain"): ["b:1"]})


def main():
    self_test()
    graph = edges(ROOT)
    if "--graph" in sys.argv:
        for (a, b), where in sorted(graph.items()):
            print(f"{a} -> {b}  ({where[0]}{', …' if len(where) > 1 else ''})")
    found = problems(graph) + handler_calls(ROOT)
    for p in found:
        print("layers:", p)
    if found:
        print(f"layers: {len(found)} problem(s)")
        return 1
    print(f"layers: {len(graph)} imports between layers, all allowed, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
