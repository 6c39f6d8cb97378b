"""What reading ahead is worth to `rightsize predict`, in one process.

`predict` of a file reads, parses and tokenises the next chunk in a background thread while the current chunk
is labelled (flows/predict.py). Two measurements, medians of --repeats after a warm-up:

1. The steps of one chunk on their own: reading and parsing the records (ops/records.read_file), tokenising
   them (EarlyExitClassifier.encode) and labelling them (predict with that encoding, at the model's calibrated
   threshold). The host share, (read + tokenise) / all three, is the most the overlap can take off a run.
2. The whole of `predict_file` on the same file in chunks of --chunk-size documents, with and without reading
   ahead, in ABBA order (each repeat runs one of them first, the next repeat the other, so drift and warm-up
   favour neither), with the ratio of the medians and each side's range.

Results go to bench/results/read_ahead-<device>.{json,md}.

examples:
  python bench/read_ahead.py                        # the calibrated AG News MiniLM of `bench/run.py --parts path`
  python bench/read_ahead.py --chunk-size 250 --repeats 5
  python bench/read_ahead.py --model runs/demo/models/m --input corpus.jsonl --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite.common import DATA, WORK, machine, timed  # noqa: E402

from flows.predict import predict_file  # noqa: E402
from models import EarlyExitClassifier  # noqa: E402
from ops.records import Document, InputFields, read_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(WORK / "suite" / "calibrated" / "minilm-ag_news"),
                        help="a calibrated model directory (default: the one `bench/run.py --parts path` makes)")
    parser.add_argument("--input", default=str(DATA / "ag_news" / "test.jsonl"),
                        help="a JSONL file with a 'text' field (default: AG News test, 1,000 documents)")
    parser.add_argument("--chunk-size", type=int, default=250, help="documents per chunk in part 2")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=6, help="per measurement (part 2: per side, ABBA order)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = EarlyExitClassifier.from_pretrained(args.model, device=args.device)
    read = lambda: [r for r in read_file(args.input, InputFields()) if isinstance(r, Document)]  # noqa: E731
    texts = [d.text for d in read()]
    encoding = model.encode(texts)
    steps = {name: timed(run, args.repeats)[0] for name, run in (
        ("read", read), ("tokenise", lambda: model.encode(texts)),
        ("label", lambda: model.predict(texts, encoding=encoding)))}
    host_share = (steps["read"] + steps["tokenise"]) / sum(steps.values())

    whole: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as out:
        def run(read_ahead: bool) -> float:
            start = time.perf_counter()
            predict_file(model, args.input, f"{out}/p.parquet", chunk_size=args.chunk_size, read_ahead=read_ahead)
            return time.perf_counter() - start

        run(True), run(False)  # warm-up
        for repeat in range(args.repeats):
            for read_ahead in ((True, False) if repeat % 2 == 0 else (False, True)):
                whole[read_ahead].append(run(read_ahead))
    seconds = {key: statistics.median(times) for key, times in whole.items()}
    speedup = seconds[False] / seconds[True]

    info = machine(args.device)
    table = "\n".join([
        f"Reading ahead in `predict`: {len(texts)} documents of {Path(args.input).name}, model "
        f"{Path(args.model).name} at its calibrated threshold, {info['gpu'] or info['cpu']}, {info['threads']} "
        f"torch threads; median of {args.repeats} after a warm-up, in one process.", "",
        "One chunk of all the documents, step by step:", "",
        "| step | seconds | share |", "|---|---|---|",
        *[f"| {name} | {s:.4f} | {s / sum(steps.values()):.1%} |" for name, s in steps.items()],
        "", f"Host share (read + tokenise): {host_share:.1%}, the most reading ahead can hide.", "",
        f"`predict_file` in chunks of {args.chunk_size}:", "",
        "| read ahead | median seconds | fastest | slowest | speedup of the medians |", "|---|---|---|---|---|",
        *[f"| {'yes' if side else 'no'} | {seconds[side]:.3f} | {min(whole[side]):.3f} | {max(whole[side]):.3f} | "
          f"{seconds[False] / seconds[side]:.2f}x |" for side in (False, True)]])
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"read_ahead-{args.device}.md").write_text(table + "\n")
    (RESULTS / f"read_ahead-{args.device}.json").write_text(json.dumps(
        {"machine": info, "documents": len(texts), "input": args.input, "model": args.model, "repeats": args.repeats,
         "chunk_size": args.chunk_size, "step_seconds": steps, "host_share": host_share,
         "predict_file_seconds": {"read_ahead": whole[True], "in_turn": whole[False]}, "speedup": speedup,
         "command": "python bench/read_ahead.py " + " ".join(sys.argv[1:])}, indent=2) + "\n")


if __name__ == "__main__":
    main()
