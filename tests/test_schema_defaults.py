"""The schema is the one source of config defaults.

``validate_config`` fills every schema default into the config, so the library indexes defaulted keys directly
(``cfg["ci_level"]``). A call ``X.get("key", <literal default>)`` whose key has a default in the schema restates
that default: change the schema and the restated value silently wins wherever the config was not validated (and
the two drift apart). This test parses every module of the package and fails on any such call outside a short
allowlist of dicts that are not config.
"""

from __future__ import annotations

import ast
from pathlib import Path

import xraypipe
from xraypipe.config import load_schema

PACKAGE = Path(xraypipe.__file__).resolve().parent

# (enclosing function's qualified name, receiver expression, key): why the default is not a restated schema
# default. Keyed by the function, not the file, so that moving a function to another module keeps its entry.
ALLOWED = {
    ("Normalization.from_meta", "norm", "method"):
        "a model file's saved normalization metadata, not config; files written before the option lack 'method'",
    ("model_from_saved.restore", "meta", "model_args"):
        "a model file's saved metadata, not config; model files need not record model_args",
}


def schema_default_keys(node) -> set[str]:
    """Every property name that has a ``default`` somewhere in the schema (at any depth, ``$defs`` included)."""
    keys: set[str] = set()
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            keys |= {name for name, sub in properties.items() if isinstance(sub, dict) and "default" in sub}
        for value in node.values():
            keys |= schema_default_keys(value)
    elif isinstance(node, list):
        for item in node:
            keys |= schema_default_keys(item)
    return keys


def _literal_default(node: ast.expr) -> bool:
    """True for a literal other than None: a constant, -1, {}, [], (0, 1), ..."""
    try:
        return ast.literal_eval(node) is not None
    except ValueError:
        return False


def restated_defaults(source: str, keys: set[str], filename: str = "<string>") -> list[tuple]:
    """(line, function, receiver, key, default) of each ``X.get("<key in keys>", <literal>)`` call in ``source``;
    ``function`` is the qualified name of the enclosing function (``Class.method``, ``outer.inner``)."""
    found = []

    def visit(node, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            function = node.name if function == "<module>" else f"{function}.{node.name}"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and len(node.args) == 2 and not node.keywords
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and node.args[0].value in keys and _literal_default(node.args[1])):
            found.append((node.lineno, function, ast.unparse(node.func.value), node.args[0].value,
                          ast.unparse(node.args[1])))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source, filename=filename), "<module>")
    return found


def test_the_schema_keys_are_collected():
    keys = schema_default_keys(load_schema())
    assert {"ci_level", "bootstrap_samples", "max_images", "use_official", "image_size", "retries", "device",
            "seed", "min_train_images", "score_threshold", "model_args"} <= keys
    assert "iobb_thresholds" not in keys and "url" not in keys  # not in the schema / no default there


def test_the_scanner_finds_a_restated_default():
    keys = schema_default_keys(load_schema())
    src = ('def f(config, cfg, row):\n'
           '    a = config.get("evaluation", {}).get("ci_level", 0.95)\n'
           '    b = cfg.get("folds", [0, 1, 2, 3, 4]), cfg.get("seed", -1)\n'
           '    c = cfg["ci_level"], cfg.get("weights"), cfg.get("seed", None), row.get("kind", "measured")\n')
    found = restated_defaults(src, keys)
    assert sorted((k, d) for _, _, _, k, d in found) == [
        ("ci_level", "0.95"), ("evaluation", "{}"), ("folds", "[0, 1, 2, 3, 4]"), ("seed", "-1")]
    assert {f for _, f, _, _, _ in found} == {"f"}


def test_no_module_restates_a_schema_default():
    keys = schema_default_keys(load_schema())
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, function, receiver, key, default in restated_defaults(path.read_text(), keys, str(path)):
            if (function, receiver, key) not in ALLOWED:
                offending.append(f"{path.relative_to(PACKAGE.parent)}:{line} (in {function}): "
                                 f"{receiver}.get({key!r}, {default})")
    assert not offending, ("schema defaults restated in the library; index the validated config instead "
                           "(cfg['key']), or allowlist a dict that is not config in ALLOWED:\n  "
                           + "\n  ".join(offending))
