"""Package imports point down the layer graph of docs/architecture.md, and the graph there is the
one the code has.

Every ``import`` of every module is read with ``ast`` (also imports inside functions); nothing
is imported, so this takes a fraction of a second.
"""

import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "architecture.md")


def documented_layers():
    """{package: set of packages it may import} from the "Layers" code block of the doc."""
    text = open(DOC).read()
    block = re.search(r"## Layers\n.*?```\n(.*?)```", text, re.S).group(1)
    layers = {}
    for line in block.strip().splitlines():
        package, targets = (part.strip() for part in line.split("->"))
        layers[package] = set() if targets.startswith("(") else set(re.split(r",\s*", targets))
    return layers


def project_imports(package, packages):
    """[(file:line, imported package)] for each import of another project package."""
    found = []
    for root, _, files in os.walk(os.path.join(REPO, package)):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            for node in ast.walk(ast.parse(open(path).read(), path)):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in packages and top != package:
                        found.append((f"{os.path.relpath(path, REPO)}:{node.lineno}", top))
    return found


def test_imports_only_point_down_the_documented_graph():
    layers = documented_layers()
    packages = {"common", "pretrain", "convert", "detection", "evaluation", "synthetic", "demo"}
    assert set(layers) == packages
    upward, used = [], {p: set() for p in layers}
    for package, allowed in layers.items():
        for where, target in project_imports(package, layers):
            used[package].add(target)
            if target not in allowed:
                upward.append(f"{where}: {package} imports {target}")
    assert not upward, "imports the graph of docs/architecture.md does not allow:\n" + "\n".join(
        upward
    )
    # the doc promises no edge the code lacks, so the graph stays a description of the code
    assert used == layers


def test_the_graph_has_no_cycle():
    layers = documented_layers()
    done = set()
    while len(done) < len(layers):
        ready = [p for p, deps in layers.items() if p not in done and deps <= done]
        assert ready, f"a cycle among {sorted(set(layers) - done)}"
        done.update(ready)
