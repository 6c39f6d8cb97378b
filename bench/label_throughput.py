"""Throughput of the Beam labelling job vs in-process predict, and the job's peak memory (issue 4).

1. Throughput: the same N documents (default 20,000, from ../shared/data: AG News and SST-2) labelled by
   `rightsize predict` (in-process, one file) and by `rightsize label` (Beam, DirectRunner), alternating,
   --repeats times each in this process; median documents/second and the ratio.
2. Peak memory: `rightsize label` in a fresh process on 10,000 and on 100,000 documents; peak RSS of that
   process (its own high-water mark, includes the model).

Results go to bench/results/label_throughput.{json,md}.

example:
  python bench/label_throughput.py --model bench/work/ag_minilm
  python bench/label_throughput.py --model bench/work/ag_minilm --documents 5000 --memory-sizes 2000,20000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def write_corpus(path: Path, n: int) -> Path:
    """n documents cycling through AG News (7,600) and SST-2 train (67,349) texts, unique ids."""
    texts = []
    for name in ("ag_news/train.jsonl", "ag_news/dev.jsonl", "ag_news/test.jsonl", "sst2/train.jsonl"):
        texts += [json.loads(line)["text"] for line in open(DATA / name, encoding="utf-8")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(islice(cycle(texts), n)):
            f.write(json.dumps({"id": f"doc-{i:07d}", "text": text}) + "\n")
    return path


def time_predict(model_dir: str, corpus: Path, out: Path) -> float:
    from flows.predict import predict_file
    from models import EarlyExitClassifier

    start = time.perf_counter()
    model = EarlyExitClassifier.from_pretrained(model_dir)
    predict_file(model, str(corpus), str(out))
    return time.perf_counter() - start


def time_label(model_dir: str, corpus: Path, out: Path, run_id: str, beam_args: tuple[str, ...] = ()) -> float:
    from pipelines.label import run
    from pipelines.label_config import LabelJobConfig

    start = time.perf_counter()
    run(LabelJobConfig(model=model_dir, input=str(corpus), output=str(out), run_id=run_id), beam_args)
    return time.perf_counter() - start


def peak_memory_mib(model_dir: str, corpus: Path, out: Path) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of `rightsize label` in a fresh process (the DirectRunner's default in-memory
    mode runs the whole job in that process); the child reports its own peak (ops/memory.peak_rss_mib)."""
    from label_memory import peak_rss_mib  # bench/

    return peak_rss_mib(["label", "--model", model_dir, "--input", str(corpus), "--output", str(out), "--run-id",
                         "mem"], out.with_suffix(".maxrss"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bench/work/ag_minilm")
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", default="10000,100000")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rightsize-bench-"))
    corpus = write_corpus(work / "corpus.jsonl", args.documents)
    predict_s, label_s = [], []
    for i in range(args.repeats):  # alternate so drift hits both alike
        predict_s.append(time_predict(args.model, corpus, work / "predict.parquet"))
        label_s.append(time_label(args.model, corpus, work / "label", f"r{i}"))
        print(f"repeat {i + 1}: predict {predict_s[-1]:.1f} s, label {label_s[-1]:.1f} s", flush=True)
    rates = {"predict": args.documents / statistics.median(predict_s), "label": args.documents / statistics.median(label_s)}

    memory = []
    for n in sorted(int(x) for x in args.memory_sizes.split(",")):
        mib, seconds = peak_memory_mib(args.model, write_corpus(work / f"mem-{n}.jsonl", n), work / f"mem-{n}")
        memory.append({"documents": n, "peak_rss_mib": mib, "seconds": seconds})
        print(f"{n} documents: peak RSS {mib:.0f} MiB, {seconds:.0f} s", flush=True)

    lines = [
        f"Labelling {args.documents:,} documents (AG News + SST-2 texts) with {args.model}, DirectRunner, 2 CPU cores; "
        f"median of {args.repeats} alternating runs in one process, model load included.", "",
        "| path | documents/s | vs in-process |", "|---|---|---|",
        f"| `rightsize predict` (in-process) | {rates['predict']:.1f} | 1.00 |",
        f"| `rightsize label` (Beam DirectRunner) | {rates['label']:.1f} | {rates['label'] / rates['predict']:.2f} |",
        "", "| documents | peak RSS of `rightsize label` (MiB) | seconds |", "|---|---|---|",
        *[f"| {m['documents']:,} | {m['peak_rss_mib']:.0f} | {m['seconds']:.0f} |" for m in memory],
    ]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "label_throughput.md").write_text(table + "\n")
    (RESULTS / "label_throughput.json").write_text(json.dumps(
        {"documents": args.documents, "predict_s": predict_s, "label_s": label_s, "docs_per_s": rates,
         "ratio": rates["label"] / rates["predict"], "memory": memory,
         "command": "python bench/label_throughput.py --model " + args.model}, indent=2) + "\n")


if __name__ == "__main__":
    main()
