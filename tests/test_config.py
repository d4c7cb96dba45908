import copy

import pytest
import yaml

from xraypipe.config import ConfigError, load_config, validate_config


@pytest.fixture()
def raw_config(project_root):
    return yaml.safe_load((project_root / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults(raw_config):
    cfg = validate_config(raw_config)
    assert cfg["datasets"]["nih_synthetic"]["missing_images"] == "error"  # filled from the schema
    assert cfg["evaluation"]["bootstrap_unit"] == "patient"
    assert "missing_images" not in raw_config["datasets"]["nih_synthetic"]  # input not mutated


def test_typo_in_key_names_the_key_and_suggests(raw_config):
    raw_config["variants"]["resnet18"]["epoch"] = 3
    with pytest.raises(ConfigError) as err:
        validate_config(raw_config, source="config.yaml")
    msg = str(err.value)
    assert "variants.resnet18.epoch" in msg and "did you mean 'epochs'" in msg and "config.yaml" in msg


def test_wrong_type_names_the_key(raw_config):
    raw_config["datasets"]["nih_synthetic"]["preprocess"]["image_size"] = "big"
    with pytest.raises(ConfigError, match=r"datasets\.nih_synthetic\.preprocess\.image_size: 'big' is not of type"):
        validate_config(raw_config)


def test_undefined_variant_in_experiment(raw_config):
    raw_config["experiment"]["variants"] = ["resnet81"]
    with pytest.raises(ConfigError, match=r"experiment\.variants\[0\]: 'resnet81'.*did you mean 'resnet18'"):
        validate_config(raw_config)


@pytest.mark.parametrize("path,value,match", [
    (("variants", "resnet18", "model"), "resnet19", r"variants\.resnet18\.model: unknown model 'resnet19'"),
    (("variants", "resnet18", "loss"), "focal", r"variants\.resnet18\.loss: unknown loss 'focal'"),
    (("datasets", "nih_synthetic", "reader"), "nihh", r"datasets\.nih_synthetic\.reader: unknown dataset reader"),
    (("datasets", "nih_synthetic", "pathologies"), ["Cardiomegally"], r"'Cardiomegally' is not a nih pathology.*Cardiomegaly"),
    (("datasets", "nih_synthetic", "synthetic"), {"n_patient": 3}, r"datasets\.nih_synthetic\.synthetic: unknown generator parameter 'n_patient'"),
    (("variants", "resnet18", "lr"), -1, r"variants\.resnet18\.lr: -1 is less than or equal to the minimum"),
])
def test_semantic_errors_name_the_key(raw_config, path, value, match):
    cfg = copy.deepcopy(raw_config)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)


def test_local_source_requires_root(raw_config):
    raw_config["datasets"]["nih"]["root"] = None
    with pytest.raises(ConfigError, match=r"datasets\.nih\.root: required when source is 'local'"):
        validate_config(raw_config)


def test_load_config_reports_bad_yaml(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("experiment: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_config_json_is_the_config_as_given_and_nothing_is_written_for_a_bad_one(raw_config, tmp_path):
    """results/config.json (DVC's params file): the config as written, no schema defaults, round-tripping."""
    import json

    from xraypipe.config import write_config_json

    out = tmp_path / "results" / "config.json"
    write_config_json(raw_config, out)
    assert json.loads(out.read_text()) == raw_config
    assert "missing_images" not in json.loads(out.read_text())["datasets"]["nih_synthetic"]  # no defaults
    write_config_json(raw_config, out, tracked=["datasets.nih_synthetic.missing_images", "datasets.nih_synthetic.root"])
    filled = json.loads(out.read_text())["datasets"]["nih_synthetic"]
    assert filled["missing_images"] == validate_config(raw_config)["datasets"]["nih_synthetic"]["missing_images"]
    assert filled["root"] is None  # tracked, but the schema has no default: null, so DVC still finds the key
    bad = copy.deepcopy(raw_config)
    bad["variants"]["resnet18"]["lr"] = "fast"
    target = tmp_path / "bad" / "config.json"
    with pytest.raises(ConfigError, match=r"variants\.resnet18\.lr"):
        write_config_json(bad, target)
    assert not target.exists() and not target.parent.exists()


def test_config_to_json_script_names_the_bad_file_and_leaves_no_output(project_root, tmp_path):
    import json
    import subprocess
    import sys

    bad = tmp_path / "config.yaml"
    bad.write_text("experiment: [unclosed\n")
    out = tmp_path / "results" / "config.json"
    proc = subprocess.run([sys.executable, str(project_root / "scripts" / "config_to_json.py"), "--config", str(bad),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"{bad}, line 2, column 1: not valid YAML" in proc.stderr, proc.stderr
    assert not out.exists()
    good = tmp_path / "good.yaml"
    good.write_text((project_root / "config.yaml").read_text())
    proc = subprocess.run([sys.executable, str(project_root / "scripts" / "config_to_json.py"), "--config",
                           str(good), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    written, given = json.loads(out.read_text()), yaml.safe_load(good.read_text())
    # the config as given, plus the tracked keys it leaves to the schema defaults (DVC needs every tracked key)
    assert written["variants"] == given["variants"] and written["experiment"] == given["experiment"]
    assert "missing_images" not in given["datasets"]["nih_synthetic"]
    assert written["datasets"]["nih_synthetic"]["missing_images"] == \
        validate_config(given)["datasets"]["nih_synthetic"]["missing_images"]


def test_loss_args_are_checked_against_the_loss(raw_config):
    from xraypipe.losses import loss_options

    assert loss_options("wcel") == ["counting", "eps"] and loss_options("class_weighted_bce") == ["fp_bias"]
    assert loss_options("bce") == []
    raw_config["variants"]["resnet18"].update(loss="wcel", loss_args={"countng": "batch"})
    with pytest.raises(ConfigError) as err:
        validate_config(raw_config, source="config.yaml")
    msg = str(err.value)
    assert "config.yaml: variants.resnet18.loss_args.countng: not an option of loss 'wcel'" in msg
    assert "did you mean 'counting'" in msg and "accepted: counting, eps" in msg
    raw_config["variants"]["resnet18"]["loss_args"] = {"counting": "per_label", "eps": 1.0}
    validate_config(raw_config)
    # the trainer's own arguments are not config options
    raw_config["variants"]["resnet18"].update(loss="class_weighted_bce", loss_args={"pos_counts": [1, 2]})
    with pytest.raises(ConfigError, match="loss_args.pos_counts: not an option of loss 'class_weighted_bce'"):
        validate_config(raw_config)
