"""Load and validate config.yaml against the JSON schema before any job starts.

Errors name the offending key as a dotted path (``variants.resnet18.epochs``) and, for unknown keys,
suggest the closest valid one.
"""

from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml


class ConfigError(ValueError):
    """config.yaml is invalid; the message names the key."""


def load_schema() -> dict:
    text = resources.files("xraypipe.schemas").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _extend_with_defaults(validator_class):
    """Validator that also fills ``default`` values of missing properties (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _extend_with_defaults(jsonschema.Draft202012Validator)


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _format_error(error: jsonschema.ValidationError, source: str) -> str:
    where = _dotted(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        parts = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            full = f"{where}.{key}" if error.absolute_path else key
            parts.append(f"{source}: unknown key {full!r}{hint}; allowed here: {', '.join(allowed)}")
        if parts:
            return "\n".join(parts)
    if error.validator == "required":
        return f"{source}: {where}: {error.message}"
    return f"{source}: {where}: {error.message}"


def validate_config(config: Mapping[str, Any], source: str = "config") -> dict:
    """Return a validated deep copy of ``config`` with schema defaults filled in.

    Raises ConfigError naming the key for schema violations and for references to undefined
    datasets/variants or unregistered readers/models/losses.
    """
    config = copy.deepcopy(dict(config))
    validator = _DefaultFillingValidator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError("\n".join(_format_error(e, source) for e in errors))
    _check_references(config, source)
    return config


def _check_references(config: dict, source: str) -> None:
    from xraypipe import losses, models  # registries; cheap imports (no torch at import time)

    try:
        from xraypipe import datasets  # the readers import numpy and pandas
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] == "xraypipe":
            raise
        # a driver environment with Snakemake alone (`--sdm conda`: rules/common.smk validates the config at parse
        # time there): the readers' checks below are left to the jobs, which validate the config again
        datasets = None

    problems = []
    for kind in ("datasets", "variants"):
        for i, name in enumerate(config["experiment"][kind]):
            if name not in config[kind]:
                close = difflib.get_close_matches(name, list(config[kind]), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{source}: experiment.{kind}[{i}]: {name!r} is not defined under {kind}:{hint}")
    for name, ds in config["datasets"].items() if datasets is not None else ():
        if ds["reader"] not in datasets.READERS:
            problems.append(f"{source}: datasets.{name}.reader: {datasets.READERS.unknown_message(ds['reader'])}")
            continue
        if ds["source"] == "local" and not ds.get("root"):
            problems.append(f"{source}: datasets.{name}.root: required when source is 'local'")
        if ds["source"] == "download" and not (ds.get("download") or {}).get("files"):
            problems.append(f"{source}: datasets.{name}.download.files: required when source is 'download'")
        for option in ("body_parts",):
            if ds.get(option) is not None and option not in datasets.READERS.get(ds["reader"]).options:
                problems.append(f"{source}: datasets.{name}.{option}: not supported by reader {ds['reader']!r}")
        reader = datasets.READERS.get(ds["reader"])
        known = list(reader.pathologies) + list(reader.extra_labels)
        for p in ds.get("pathologies") or []:
            if p not in known:
                close = difflib.get_close_matches(p, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{source}: datasets.{name}.pathologies: {p!r} is not a {ds['reader']} pathology{hint}")
        if ds["source"] == "synthetic":
            try:
                datasets.check_synthetic_params(ds["reader"], ds.get("synthetic") or {})
            except ValueError as exc:
                problems.append(f"{source}: datasets.{name}.synthetic: {exc}")
    for name, var in config["variants"].items():
        if var["model"] not in models.MODELS:
            problems.append(f"{source}: variants.{name}.model: {models.MODELS.unknown_message(var['model'])}")
        if var.get("encoding") == "u_multiclass" and var["loss"] not in ("bce", "masked_bce"):
            problems.append(f"{source}: variants.{name}.loss: u_multiclass trains with a 3-class cross-entropy; "
                            f"loss {var['loss']!r} does not apply (use bce)")
        if var["loss"] not in losses.LOSSES:
            problems.append(f"{source}: variants.{name}.loss: {losses.LOSSES.unknown_message(var['loss'])}")
        else:
            accepted = losses.loss_options(var["loss"])
            for key in var.get("loss_args") or {}:
                if key not in accepted:
                    close = difflib.get_close_matches(key, accepted, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    problems.append(f"{source}: variants.{name}.loss_args.{key}: not an option of loss "
                                    f"{var['loss']!r}{hint}; accepted: {', '.join(accepted) or 'none'}")
    cv = config.get("cross_validation") or {}
    for i, name in enumerate(cv.get("variants") or []):
        if name not in config["variants"]:
            close = difflib.get_close_matches(name, list(config["variants"]), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{source}: cross_validation.variants[{i}]: {name!r} is not defined under variants:{hint}")
    folds = cv.get("folds")
    if folds is not None and list(folds) != list(range(len(folds))):
        problems.append(f"{source}: cross_validation.folds: must be the fold numbers 0..k-1 in order, e.g. "
                        f"{list(range(len(folds)))} for k = {len(folds)}; got {list(folds)}")
    if problems:
        raise ConfigError("\n".join(problems))


def yaml_error_line(path: str | Path, exc: yaml.YAMLError) -> str:
    """One line naming the file, line and column of a YAML syntax error: ``a.yaml, line 3, column 5: <problem>``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{path}{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def read_config_file(path: str | Path) -> dict:
    """config.yaml (or an overlay) as written, not validated; errors name the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(path, exc)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def load_config(path: str | Path) -> dict:
    return validate_config(read_config_file(path), source=str(path))


def filled_config(config: dict, tracked: tuple = (), source: str = "config") -> dict:
    """``config`` as given, with each dotted key of ``tracked`` that it leaves out filled in from the validated
    config (``null`` where that has none too): DVC fails on a tracked key its params file lacks."""
    validated = validate_config(config, source=source)
    written = copy.deepcopy(dict(config))
    for dotted in tracked:
        keys = dotted.split(".")
        node = validated
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        value = node
        target = written
        for key in keys[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {} if target.get(key) is None else target[key]
            target = target[key]
        if isinstance(target, dict) and keys[-1] not in target:
            target[keys[-1]] = copy.deepcopy(value)
    return written


def write_config_json(config: dict, out: str | Path, source: str = "config", tracked: tuple = (),
                      params_dir: str | Path | None = None) -> None:
    """Validate ``config`` (a ConfigError names the bad key; nothing is written then) and write it as given to
    ``out`` as JSON (atomically), each key of ``tracked`` filled in (:func:`filled_config`): the record of how
    results/ was configured.

    ``params_dir``: also write DVC's params files there (:func:`write_params_dir`)."""
    from xraypipe.atomic import write_json

    written = filled_config(config, tracked, source)
    if params_dir is not None:
        write_params_dir(written, params_dir)
    write_json(out, written)


NAMED_SECTIONS = ("datasets", "variants")  # sections whose entries get a params file each


def params_file(key: str) -> str:
    """The file of a params directory that holds the dotted ``key`` (placeholders allowed): one file per
    top-level section (``training.json``), and one per dataset and per variant (``variants/<name>.json``)."""
    parts = key.split(".")
    if parts[0] in NAMED_SECTIONS and len(parts) > 1:
        return f"{parts[0]}/{parts[1]}.json"
    return f"{parts[0]}.json"


def write_params_dir(written: dict, params_dir: str | Path) -> None:
    """DVC's params files, split so that each stays small: DVC walks the whole file for every key a stage tracks
    (dpath), once per stage, so with 50 variants one file holding everything makes `dvc status` ~2 s slower (see
    benchmarks/README.md). Every file holds its keys at their full dotted path. Written atomically as one
    directory."""
    import json

    from xraypipe.atomic import atomic_dir

    files = {params_file(section): {section: body} for section, body in written.items()}
    for section in NAMED_SECTIONS:
        for name, body in (written.get(section) or {}).items():
            files[params_file(f"{section}.{name}")] = {section: {name: body}}
    with atomic_dir(params_dir) as tmp:
        for name, body in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(body, indent=1, sort_keys=True, allow_nan=True) + "\n")


def dataset_config(config: dict, dataset: str) -> dict:
    try:
        return config["datasets"][dataset]
    except KeyError:
        raise ConfigError(f"dataset {dataset!r} is not defined under datasets:") from None


def variant_config(config: dict, variant: str) -> dict:
    try:
        return config["variants"][variant]
    except KeyError:
        raise ConfigError(f"variant {variant!r} is not defined under variants:") from None
