"""The package's import graph, read from the source with ast (imports inside functions included): no cycles."""

from xraypipe.code_deps import imported_modules, package_modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (read by xraypipe.code_deps, which computes the stages' code
    dependencies from the same graph)."""
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        # the package itself (``from xraypipe import x``) is not an edge: its __init__ imports nothing
        graph[name] = {t for t in imported_modules(path, package) if t in modules and t not in (name, "xraypipe")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"xraypipe.train", "xraypipe.boxes", "xraypipe.datasets.nih"} <= set(graph)
    assert "xraypipe.boxes" in graph["xraypipe.localization"] and "xraypipe.standardize" in graph["xraypipe.data"]
    assert cycles(graph) == []
