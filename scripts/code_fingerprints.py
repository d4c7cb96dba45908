"""DVC stage code_fingerprints: the sha256 of every code file each stage runs, one file per stage
(results/code/<stage>.json), so each DVC stage has one code dependency instead of its whole import closure."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe.workflow import write_code_fingerprints


def main():
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    written = write_code_fingerprints()
    print(f"wrote {len(written)} code fingerprints under {Path(written[0]).parent}")


if __name__ == "__main__":
    main()
