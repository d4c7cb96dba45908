"""Stage cv_folds: assign the pooled train + val images of a dataset's cache to k patient-grouped, seeded,
label-stratified folds (cross_validation.folds / .seed) for one cross-validated variant."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli


def main():
    p = cli.parser(__doc__)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--folds", required=True, help="output: the fold assignment CSV")
    args = p.parse_args()
    config = cli.stage_config(args, "cv_folds")
    from xraypipe.cv import check_fold_ids, write_folds
    from xraypipe.datasets.contract import manifest_pathologies
    from xraypipe.preprocess import load_cache_index

    cv = config["cross_validation"]
    k = check_fold_ids(cv["folds"])
    index_path = Path(args.cache_dir) / "index.csv"
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path}: cache index not found (run the build_cache rule first)")
    pathologies = manifest_pathologies(load_cache_index(args.cache_dir))
    write_folds(args.cache_dir, pathologies, k, int(cv["seed"]), args.folds)


if __name__ == "__main__":
    cli.run(main)
