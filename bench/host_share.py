"""How much of `rightsize predict`'s time is host-side preparation that reading ahead can hide.

`predict` of a file reads, parses and tokenises the next chunk in a background thread while the current chunk
is labelled (flows/predict.py). This script times the three steps of one chunk on their own, in one process:
reading and parsing the JSONL records (ops/records.read_file), tokenising them (EarlyExitClassifier.encode)
and labelling them (predict with that encoding, at the model's calibrated threshold). The host share,
(read + tokenise) / (read + tokenise + label), is the most that the overlap can take off a run's time; on a
GPU, where labelling is fast, it is the number that matters. Medians of --repeats after a warm-up.

Results go to bench/results/host_share-<device>.{json,md}.

examples:
  python bench/host_share.py                                   # the calibrated AG News MiniLM of `make bench`
  python bench/host_share.py --model runs/model --input ../shared/data/sst2/test.jsonl --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite.common import DATA, WORK, machine, timed  # noqa: E402

from models import EarlyExitClassifier  # noqa: E402
from ops.records import Document, InputFields, read_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(WORK / "suite" / "calibrated" / "minilm-ag_news"),
                        help="a calibrated model directory (default: the one `bench/run.py --parts path` makes)")
    parser.add_argument("--input", default=str(DATA / "ag_news" / "test.jsonl"), help="a JSONL file: one chunk")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = EarlyExitClassifier.from_pretrained(args.model, device=args.device)
    read = lambda: [r for r in read_file(args.input, InputFields()) if isinstance(r, Document)]  # noqa: E731
    texts = [d.text for d in read()]
    encode = lambda: model.encode(texts)  # noqa: E731
    encoding = encode()
    label = lambda: model.predict(texts, encoding=encoding)  # noqa: E731
    steps = {name: timed(run, args.repeats)[0] for name, run in (("read", read), ("tokenise", encode),
                                                                   ("label", label))}
    total = sum(steps.values())
    host = (steps["read"] + steps["tokenise"]) / total
    info = machine(args.device)
    table = "\n".join([
        f"Host-side share of one `predict` chunk: {len(texts)} documents of {Path(args.input).name}, model "
        f"{Path(args.model).name} at its calibrated threshold, {info['gpu'] or info['cpu']}, {info['threads']} "
        f"threads; median of {args.repeats} after a warm-up.", "",
        "| step | seconds | share |", "|---|---|---|",
        *[f"| {name} | {seconds:.4f} | {seconds / total:.1%} |" for name, seconds in steps.items()],
        "", f"Reading ahead can hide at most {host:.1%} of the run's time here."])
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"host_share-{args.device}.md").write_text(table + "\n")
    (RESULTS / f"host_share-{args.device}.json").write_text(json.dumps(
        {"machine": info, "documents": len(texts), "input": args.input, "model": args.model, "repeats": args.repeats,
         "seconds": steps, "host_share": host, "command": "python bench/host_share.py " + " ".join(sys.argv[1:])},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
