"""Peak memory of `rightsize label` on the DirectRunner at 10k, 100k and 1M documents (issue 8).

Each size runs `rightsize label` in a fresh process (the DirectRunner's default in-memory mode runs the whole
job in that process), which reports its own peak RSS (VmHWM, ops/memory.peak_rss_mib). The model is a small
random BERT (2 layers, 128 wide, MiniLM's tokenizer) so that 1,000,000 documents take minutes, not hours: what
is measured is the pipeline's memory, and the model's share of it is printed apart (RSS after loading it alone).

Both ways of feeding the model are measured where asked: without a reshuffle after reading (the default on
the in-process DirectRunner) and with one (--reshuffle, the default where there are several workers: it
spreads one file over them, and the DirectRunner holds a shuffle's whole input in memory).

Results go to bench/results/label_memory.{json,md}.

examples:
  python bench/label_memory.py                                  # 10k, 100k, 1M; reshuffled at 10k, 100k
  python bench/label_memory.py --sizes 10000,100000 --reshuffle-sizes 10000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def write_corpus(path: Path, n: int) -> Path:
    """n documents cycling through AG News train texts (120 words or so each), unique ids."""
    texts = [json.loads(line)["text"] for line in open(DATA / "ag_news" / "train.jsonl", encoding="utf-8")]
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(islice(cycle(texts), n)):
            f.write(json.dumps({"id": f"doc-{i:07d}", "text": text}) + "\n")
    return path


def small_model(directory: Path) -> str:
    import transformers
    from transformers import AutoTokenizer

    from models import EarlyExitClassifier
    from models.classifier import resolve_backbone

    backbone = directory / "backbone"
    config = transformers.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=256, vocab_size=30522)
    transformers.BertModel(config).save_pretrained(backbone)
    AutoTokenizer.from_pretrained(resolve_backbone("minilm")).save_pretrained(backbone)
    model = EarlyExitClassifier.from_backbone(str(backbone), labels=["a", "b", "c", "d"], exit_layers=(1, 2),
                                              max_length=128)
    model.save_pretrained(directory / "model")
    return str(directory / "model")


_CHILD = ("import sys; from flows.cli import main; from ops.memory import peak_rss_mib; rc = main(sys.argv[2:]); "
          "open(sys.argv[1], 'w').write(str(peak_rss_mib())); sys.exit(rc)")


def peak_rss_mib(args: list[str], report: Path) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of `rightsize ARGS` in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CHILD, str(report), *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return float(report.read_text()), time.perf_counter() - start


def model_only_rss_mib(model_dir: str) -> float:
    code = ("import sys; from models import EarlyExitClassifier; from ops.memory import peak_rss_mib; "
            "m = EarlyExitClassifier.from_pretrained(sys.argv[1]); m.predict(['warm up']); print(peak_rss_mib())")
    return float(subprocess.run([sys.executable, "-c", code, model_dir], check=True, capture_output=True,
                                text=True).stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="documents per run, without reshuffle")
    parser.add_argument("--reshuffle-sizes", default="10000,100000", help="documents per run with --reshuffle")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rightsize-memory-"))
    model_dir = small_model(work)
    baseline = model_only_rss_mib(model_dir)
    print(f"python + torch + model, after one prediction: {baseline:.0f} MiB", flush=True)
    runs = []
    plan = [(int(n), False) for n in args.sizes.split(",") if n] + \
           [(int(n), True) for n in args.reshuffle_sizes.split(",") if n]
    for n, reshuffle in sorted(plan):
        corpus = write_corpus(work / f"corpus-{n}.jsonl", n)
        flag = "--reshuffle" if reshuffle else "--no-reshuffle"
        mib, seconds = peak_rss_mib(["label", "--model", model_dir, "--input", str(corpus), "--output",
                                     str(work / "out"), "--run-id", f"{n}-{flag[2:]}", flag], work / "maxrss")
        runs.append({"documents": n, "reshuffle": reshuffle, "peak_rss_mib": round(mib, 1),
                     "seconds": round(seconds, 1), "input_mib": round(corpus.stat().st_size / 2**20, 1)})
        print(f"{n:>9,} documents, {flag:<14}: peak RSS {mib:7.0f} MiB in {seconds:6.0f} s "
              f"(input file {runs[-1]['input_mib']} MiB)", flush=True)
        corpus.unlink()

    lines = [
        "Peak RSS of `rightsize label` (DirectRunner, in-process) in a fresh process per run; small random BERT "
        f"(2 layers, 128 wide); AG News texts; {platform.machine()}, 2 CPU cores. Python + torch + model alone, "
        f"after one prediction: {baseline:.0f} MiB.", "",
        "| documents | reshuffle | input file (MiB) | peak RSS (MiB) | seconds |", "|---|---|---|---|---|",
        *[f"| {r['documents']:,} | {'yes' if r['reshuffle'] else 'no (default)'} | {r['input_mib']} | "
          f"{r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |" for r in runs],
    ]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "label_memory.md").write_text(table + "\n")
    (RESULTS / "label_memory.json").write_text(json.dumps(
        {"model_only_rss_mib": round(baseline, 1), "runs": runs,
         "command": "python bench/label_memory.py " + " ".join(sys.argv[1:])}, indent=2) + "\n")


if __name__ == "__main__":
    main()
