"""Stage config_to_json: the configuration as given, validated, written as JSON (plus any key a stage tracks
that it leaves to the schema default, filled in: DVC needs every tracked key in the file).

It records what a run was configured with; --params-dir writes the params files every other DVC stage tracks (DVC
re-reads a params file for each stage that lists it; small JSON files keep `dvc status` fast with many variants).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.config import read_config_file, write_config_json
from xraypipe.workflow import tracked_keys


def main():
    p = cli.parser(__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--params-dir", help="also write DVC's params files (the same config split into small files) here")
    args = p.parse_args()
    config = read_config_file(args.config) if args.config is not None else cli.resolve_config(args)
    source = args.config or "--config-json"
    write_config_json(config, args.out, source=source, tracked=tracked_keys(config),
                      params_dir=args.params_dir)
    print(f"{source}: {len(config.get('variants', {}))} variants, {len(config.get('datasets', {}))} datasets "
          f"-> {args.out}")


if __name__ == "__main__":
    cli.run(main)
