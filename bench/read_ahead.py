"""What reading and tokenising ahead are worth to `rightsize predict` and `rightsize label`, in one process.

`predict` of a file reads, parses and tokenises the next chunk in a background thread while the current chunk
is labelled (flows/predict.py); `label`, which gets one chunk at a time from Beam, can tokenise the next part of
a chunk while the current part's batches run (`--tokenize-ahead`, EarlyExitClassifier.predict's tokenize_ahead).
Three measurements, medians of --repeats after a warm-up:

1. The steps of one chunk on their own: reading and parsing the records (ops/records.read_file), tokenising
   them (EarlyExitClassifier.encode) and labelling them (predict with that encoding, at the model's calibrated
   threshold). The host share, (read + tokenise) / all three, is the most the overlap can take off a run.
2. The whole of `predict_file` on the same file in chunks of --chunk-size documents, with and without reading
   ahead, in ABBA order (each repeat runs one of them first, the next repeat the other, so drift and warm-up
   favour neither), with the ratio of the medians and each side's range.
3. `EarlyExitClassifier.predict` of all the documents as one chunk (what `label`'s model handler does with a
   RunInference batch), tokenising them in parts ahead or all of them first, in ABBA order as in 2; and the
   tokens the batches of one chunk of this file and of --padding-input hold, padding included, when sorted by
   tokens, by characters alone, and in parts.

Results go to bench/results/read_ahead-<machine>[-<dtype>].{json,md}, a file per machine and precision (the
older read_ahead-cpu.{json,md} are an AMD EPYC's, in float32).

examples:
  python bench/read_ahead.py                        # the calibrated AG News MiniLM of `bench/run.py --parts path`
  python bench/read_ahead.py --chunk-size 250 --repeats 5
  python bench/read_ahead.py --dtype bfloat16         # where the CPU has bfloat16 natively (AVX512-BF16, AMX)
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite.common import DATA, WORK, machine, machine_slug, timed  # noqa: E402

from flows.predict import predict_file  # noqa: E402
from models import EarlyExitClassifier  # noqa: E402
from models.classifier import _token_counts, default_batch_size, part_size, read_model_config  # noqa: E402
from models.config import DTYPE_CHOICES  # noqa: E402
from ops.records import Document, InputFields, read_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def abba(run, repeats: int) -> dict[bool, list[float]]:
    """Seconds of ``run(True)`` and ``run(False)``, ``repeats`` each after a warm-up each, in ABBA order (each
    repeat runs one side first, the next repeat the other, so drift and warm-up favour neither)."""
    times: dict[bool, list[float]] = {True: [], False: []}
    run(True), run(False)
    for repeat in range(repeats):
        for side in ((True, False) if repeat % 2 == 0 else (False, True)):
            start = time.perf_counter()
            run(side)
            times[side].append(time.perf_counter() - start)
    return times


def padded_tokens(model: EarlyExitClassifier, texts: list[str], size: int) -> dict[str, int]:
    """Tokens in ``predict``'s batches of ``size`` rows of ``texts``, padding included, as each ordering makes
    them (the part sizes of tokenising ahead depend on ``size``), and without padding."""
    tokens = lambda batches: sum(batch["input_ids"].numel() for _, batch, _, _ in batches)  # noqa: E731
    encoding = model.encode(texts)
    counts = _token_counts(encoding.tokens)
    by_chars = np.argsort(-np.array([len(t) for t in texts]), kind="stable")  # what the parts are cut by
    return {"unpadded": int(counts.sum()), "by tokens": tokens(model._length_sorted_batches(encoding.tokens, size)),
            "by characters": int(sum(counts[by_chars[i:i + size]].max() * len(by_chars[i:i + size])
                                     for i in range(0, len(texts), size))),
            "in parts": tokens(model._batches_of_parts(model._tokenized_parts(texts, None, size, model.tokenizer),
                                                       size))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(WORK / "suite" / "calibrated" / "minilm-ag_news"),
                        help="a calibrated model directory (default: the one `bench/run.py --parts path` makes)")
    parser.add_argument("--input", default=str(DATA / "ag_news" / "test.jsonl"),
                        help="a JSONL file with a 'text' field (default: AG News test, 1,000 documents)")
    parser.add_argument("--padding-input", default=str(DATA / "sst2" / "test.jsonl"),
                        help="a second JSONL file whose batches' padding is counted (default: SST-2 test)")
    parser.add_argument("--chunk-size", type=int, default=250, help="documents per chunk in part 2")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                        help="the model's precision (as predict's --dtype)")
    parser.add_argument("--repeats", type=int, default=6, help="per measurement (part 2: per side, ABBA order)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = EarlyExitClassifier.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    read = lambda: [r for r in read_file(args.input, InputFields()) if isinstance(r, Document)]  # noqa: E731
    texts = [d.text for d in read()]
    encoding = model.encode(texts)
    steps = {name: timed(run, args.repeats)[0] for name, run in (
        ("read", read), ("tokenise", lambda: model.encode(texts)),
        ("label", lambda: model.predict(texts, encoding=encoding)))}
    host_share = (steps["read"] + steps["tokenise"]) / sum(steps.values())

    with tempfile.TemporaryDirectory() as out:
        whole = abba(lambda ahead: predict_file(model, args.input, f"{out}/p.parquet", chunk_size=args.chunk_size,
                                                read_ahead=ahead), args.repeats)
    chunk = abba(lambda ahead: model.predict(texts, tokenize_ahead=ahead), args.repeats)
    # one chunk of `label` (its default --chunk-size) from each file, at the default batch sizes of a CPU and a GPU
    chunks = {Path(url).parent.name: [d.text for d in read_file(url, InputFields()) if isinstance(d, Document)][:1024]
              for url in (args.input, args.padding_input)}
    sizes = sorted({default_batch_size("cpu"), default_batch_size("cuda")})
    padded = {name: {size: padded_tokens(model, some, size) for size in sizes} for name, some in chunks.items()}
    seconds = {key: statistics.median(times) for key, times in whole.items()}
    speedup = seconds[False] / seconds[True]
    chunk_seconds = {key: statistics.median(times) for key, times in chunk.items()}

    info = machine(args.device)
    source = read_model_config(args.model).calibration_source(model.dtype_name)  # what from_pretrained took
    calibrated = f"the threshold {model.config.threshold:.4f}" + (f" calibrated in {source}" if source else "")
    table = "\n".join([
        f"Reading and tokenising ahead in `predict` and `label`: {len(texts)} documents of {Path(args.input).name}, "
        f"model {Path(args.model).name} in {model.dtype_name} at {calibrated}, "
        f"{info['gpu'] or info['cpu']}, {info['threads']} torch threads; median of {args.repeats} after a warm-up, "
        "in one process.", "",
        "One chunk of all the documents, step by step:", "",
        "| step | seconds | share |", "|---|---|---|",
        *[f"| {name} | {s:.4f} | {s / sum(steps.values()):.1%} |" for name, s in steps.items()],
        "", f"Host share (read + tokenise): {host_share:.1%}, the most reading ahead can hide.", "",
        f"`predict_file` in chunks of {args.chunk_size}:", "",
        "| read ahead | median seconds | fastest | slowest | speedup of the medians |", "|---|---|---|---|---|",
        *[f"| {'yes' if side else 'no'} | {seconds[side]:.3f} | {min(whole[side]):.3f} | {max(whole[side]):.3f} | "
          f"{seconds[False] / seconds[side]:.2f}x |" for side in (False, True)],
        "", f"`predict` of the {len(texts)} documents as one chunk (`label`'s handler), "
            f"{default_batch_size(args.device)} rows a batch:", "",
        "| tokenise | median seconds | fastest | slowest | speedup of the medians |", "|---|---|---|---|---|",
        *[f"| {'in parts, ahead' if side else 'all first'} | {chunk_seconds[side]:.3f} | {min(chunk[side]):.3f} | "
          f"{max(chunk[side]):.3f} | {chunk_seconds[False] / chunk_seconds[side]:.2f}x |" for side in (False, True)],
        "", "Tokens in the batches of one chunk (`label`'s default of 1,024 documents, or the whole file), padding "
            "included, at the default batch sizes of a CPU and a GPU:", "",
        "| documents | rows a batch | batches sorted | tokens | over sorting by tokens |", "|---|---|---|---|---|",
        *[f"| {name} ({len(chunks[name]):,}; {counts['unpadded']:,} tokens unpadded) | {size} | {label} | "
          f"{counts[key]:,} | {counts[key] / counts['by tokens'] - 1:+.1%} |"
          for name, by_size in padded.items() for size, counts in by_size.items()
          for key, label in (("by tokens", "by tokens (all first)"), ("by characters", "by characters alone"),
                             ("in parts", f"in parts of {part_size(len(chunks[name]), size)} by characters, by "
                                          "tokens within (ahead)"))]])
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    precision = "" if model.dtype_name == "float32" else f"-{model.dtype_name}"
    stem = RESULTS / f"read_ahead-{machine_slug(info)}{precision}"
    stem.with_suffix(".md").write_text(table + "\n")
    stem.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "documents": len(texts), "input": args.input, "model": args.model, "dtype": model.dtype_name,
         "threshold": model.config.threshold, "calibrated_in": source, "repeats": args.repeats,
         "chunk_size": args.chunk_size, "step_seconds": steps, "host_share": host_share,
         "predict_file_seconds": {"read_ahead": whole[True], "in_turn": whole[False]}, "speedup": speedup,
         "chunk_seconds": {"tokenize_ahead": chunk[True], "tokenize_first": chunk[False]},
         "chunk_speedup": chunk_seconds[False] / chunk_seconds[True], "padded_tokens": padded,
         "padding_inputs": [args.input, args.padding_input],
         "command": "python bench/read_ahead.py " + " ".join(sys.argv[1:])}, indent=2) + "\n")


if __name__ == "__main__":
    main()
