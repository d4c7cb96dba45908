"""Config sections built the way the pipeline passes them to the library: through ``validate_config``, so every
schema default is filled in (the library indexes defaulted keys directly; the schema is their one source).

``validated_section("evaluation", bootstrap_samples=20)`` is ``config["evaluation"]`` of a config whose evaluation
section is just ``{"bootstrap_samples": 20}``; a dotted path (``"evaluation.localization"``) names a nested section.
``validated_dataset({...})`` is one ``datasets.<name>`` entry.
"""

from __future__ import annotations

import copy

from workflow_copy import load_tiny_config
from xraypipe.config import validate_config


def validated_section(path: str, **overrides) -> dict:
    """The section at dotted ``path`` of a validated tiny config whose section at ``path`` is ``overrides``
    (the tiny config's own settings of that top-level section are dropped: unset keys get the schema defaults)."""
    keys = path.split(".")
    section: dict = copy.deepcopy(overrides)
    for key in reversed(keys[1:]):
        section = {key: section}
    cfg = load_tiny_config()
    cfg[keys[0]] = section
    out = validate_config(cfg, source="test")
    for key in keys:
        out = out[key]
    return out


def validated_dataset(dataset: dict, name: str = "ds") -> dict:
    """``dataset`` (one ``datasets:`` entry) validated, with the schema defaults filled in."""
    cfg = load_tiny_config()
    cfg["datasets"] = {name: copy.deepcopy(dataset)}
    cfg["experiment"]["datasets"] = [name]
    return validate_config(cfg, source="test")["datasets"][name]
