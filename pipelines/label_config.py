"""Settings of the labelling job: one dataclass whose fields map one to one onto the CLI flags.
Kept apart from ``label.py`` so the CLI can show ``--help`` without importing Beam."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Sequence

from models.config import DTYPE_CHOICES, check_threshold
from ops.predictions import check_run_id, new_run_id
from ops.records import InputFields
from ops.urls import local_path


@dataclass(frozen=True)
class LabelJobConfig:
    model: str  # model directory, local path or URL every worker can read (gs://, s3://, ...)
    input: str  # glob of .jsonl/.csv/.tsv/.parquet/.txt files (local, memory://, or an fsspec URL)
    output: str  # output prefix; this run writes under <output>/<run_id>/
    run_id: str
    threshold: float | None = None  # None: the model's calibrated default
    text_field: str = "text"
    pair_field: str | None = None
    id_field: str = "id"
    batch_size: int | None = None  # rows per early-exit forward pass; None: the device's default (64 CPU, 256 GPU)
    chunk_size: int = 1024  # documents per RunInference batch; sorted by length into batch_size batches
    # Seconds a partial batch may wait (streaming-style). When set, RunInference batches through Beam's
    # stateful, length-bucketed BatchElements, so each chunk already holds documents of similar length.
    max_batch_duration_secs: int | None = None
    # Spread documents over workers with a Reshuffle after reading (one file is read by one worker). None: on,
    # except on the in-process DirectRunner, which has one worker and would hold the shuffled collection in memory.
    reshuffle: bool | None = None
    # GPU workers: one model per machine shared by its SDK processes, up to model_copies copies (Beam's
    # ModelHandler large_model / model_copies). Default: one model per process.
    share_model_across_processes: bool = False
    model_copies: int | None = None
    dtype: str = "float32"  # the backbone's compute precision, or "auto" (models/precision.py), chosen at launch
    threads: int | None = None  # torch threads per process; None: cores / processes when the DirectRunner starts
    # several, else torch's default
    # Tokenise each chunk in parts, the next part in a background thread while the current part's batches run
    # (EarlyExitClassifier.predict's tokenize_ahead). None: on a GPU worker, off on a CPU worker.
    tokenize_ahead: bool | None = None

    def __post_init__(self):
        if self.output.startswith("file://"):  # Beam's file systems know plain paths only, not file:// URLs
            object.__setattr__(self, "output", local_path(self.output))
        check_run_id(self.run_id)
        if self.threshold is not None:
            check_threshold(self.threshold)
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {self.dtype!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.batch_size is not None and not 1 <= self.batch_size <= self.chunk_size:
            raise ValueError(f"need 1 <= batch_size <= chunk_size, got {self.batch_size} and {self.chunk_size}")
        if self.model_copies is not None and self.model_copies < 1:
            raise ValueError(f"model_copies must be >= 1, got {self.model_copies}")
        if self.max_batch_duration_secs is not None and self.max_batch_duration_secs < 1:
            raise ValueError(f"--max-batch-duration-secs (max_batch_duration_secs) must be >= 1, got "
                             f"{self.max_batch_duration_secs}")

    def check_runner(self, beam_args: Sequence[str]) -> None:
        """The settings that the runner ``beam_args`` picks (the DirectRunner when none is named) cannot run."""
        from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

        runner = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or "DirectRunner"
        known = {name.lower() for name in StandardOptions.KNOWN_RUNNER_NAMES}
        if isinstance(runner, str) and "." not in runner and not {runner.lower(), runner.lower() + "runner"} & known:
            # as Beam's create_runner resolves a name, which it does only once the job is about to start
            raise ValueError(f"--runner {runner!r} is not a Beam runner: give one of "
                             f"{', '.join(StandardOptions.KNOWN_RUNNER_NAMES)}, or a PipelineRunner's dotted path")
        if self.max_batch_duration_secs is not None and is_direct_runner(runner):
            # Its timers send the DirectRunner to its bundle-based mode, where a GroupByKey after the stateful
            # BatchElements fails an assertion at the end of the input (apache/beam#28716; Beam 2.77).
            raise ValueError("--max-batch-duration-secs (max_batch_duration_secs) needs a runner with stateful "
                             "processing (Dataflow, Flink, Spark): Beam's DirectRunner fails on it "
                             "(apache/beam#28716). A bounded job on one machine does not need it: each chunk is "
                             "sorted by length anyway")

    @property
    def fields(self) -> InputFields:
        return InputFields(self.text_field, self.pair_field, self.id_field)

    @property
    def run_dir(self) -> str:
        return f"{self.output.rstrip('/')}/{self.run_id}"


def is_direct_runner(runner: object) -> bool:
    """Whether a --runner value (a name, a dotted path or a runner object) is Beam's DirectRunner, whose workers
    run on this machine: DirectRunner, direct, SwitchingDirectRunner, BundleBasedDirectRunner..."""
    return "direct" in str(runner).lower()


def add_field_flags(parser: argparse.ArgumentParser, with_label: bool) -> None:
    """Which fields of a record hold the text, its pair, and the gold label (training data) or the id (inputs)."""
    parser.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    parser.add_argument("--pair-field", default=None, help="field holding the second text of a pair task (e.g. NLI)")
    if with_label:
        parser.add_argument("--label-field", default="label", help="field holding the gold label (default: label)")
    else:
        parser.add_argument("--id-field", default="id", help="field holding the document id (default: id; missing "
                                                              "ids are derived from file and line)")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The job's own flags (one per LabelJobConfig field); everything else goes to Beam."""
    parser.add_argument("--model", required=True, help="model directory (local, or gs://, s3://... readable by workers)")
    parser.add_argument("--input", required=True,
                        help="glob of .jsonl (or .json array)/.csv/.tsv/.parquet/.txt files (local or fsspec URL)")
    parser.add_argument("--output", required=True, help="output prefix; the run writes under <output>/<run-id>/")
    parser.add_argument("--threshold", type=float, default=None, help="default: the model's calibrated threshold")
    parser.add_argument("--run-id", default=None,
                        help="one folder name (letters, digits, '.', '_', '-'); default: time + random suffix; "
                             "re-using one replaces that run")
    add_field_flags(parser, with_label=False)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per early-exit forward pass (default: 64 on a CPU worker, 256 on a GPU worker)")
    parser.add_argument("--chunk-size", type=int, default=1024,
                        help="documents per RunInference batch, sorted by length into --batch-size rows (default 1024)")
    parser.add_argument("--max-batch-duration-secs", type=int, default=None,
                        help="let a partial batch wait at most this long, and batch by length buckets (Beam's "
                             "stateful BatchElements); for long-running or streaming jobs on Dataflow, Flink or "
                             "Spark (the DirectRunner cannot run it)")
    parser.add_argument("--reshuffle", action=argparse.BooleanOptionalAction, default=None,
                        help="spread each file's documents over all workers after reading (default: on, except on the "
                             "in-process DirectRunner, which has one worker)")
    parser.add_argument("--share-model-across-processes", action="store_true",
                        help="load one model per machine, shared by its SDK processes (GPU workers: one copy "
                             "per GPU instead of one per process)")
    parser.add_argument("--model-copies", type=int, default=None,
                        help="with a shared model: how many copies per machine (e.g. one per GPU); implies "
                             "--share-model-across-processes")
    add_precision_flags(parser, threads=True)
    parser.add_argument("--tokenize-ahead", action=argparse.BooleanOptionalAction, default=None,
                        help="tokenise each chunk in parts, the next part in a background thread while the current "
                             "part's batches run (default: on a GPU worker, off on a CPU worker, where it gained "
                             "nothing measurable)")


def add_precision_flags(parser: argparse.ArgumentParser, threads: bool) -> None:
    """--dtype (and --threads) for every command that runs the model."""
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                        help="compute precision of the backbone (default float32); auto: bfloat16 on a CPU with "
                             "native bf16 (AVX512-BF16/AMX) or a CUDA GPU that has it, float16 on older GPUs, "
                             "else float32; int8: feed-forward layers quantised to int8 (CPU only; never chosen "
                             "by auto). Exit softmax and temperatures stay float32")
    if threads:
        parser.add_argument("--threads", type=int, default=None,
                            help="torch threads per labelling process (default: CPU cores / processes)")


def unknown_beam_flags(flags: list[str]) -> list[str]:
    """The entries of ``flags`` that no Beam pipeline option accepts (Beam itself only logs and drops them, so
    a misspelled ``--direct_num_worker=2`` would run with the default). Exits with status 2, like argparse,
    when a known option has a bad value (``--direct_num_workers=many``)."""
    # Beam's options module only, not a pipeline: quick enough for the CLI. It holds the options of the Direct,
    # Dataflow, Flink, Spark, Prism and portable runners; a runner with options in its own module (Dask) would
    # need that module imported first.
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    # As PipelineOptions.get_all_options does: one class per name (a class defined in a re-loaded main session
    # appears twice), every class adds its flags, no prefix matching. "resolve": a subclass that inherits its
    # parent's flags adds them again.
    classes: dict[str, type] = {}
    for cls in subclasses(PipelineOptions):
        classes.setdefault(str(cls), cls)
    parser = _BeamArgumentParser(prog="rightsize label", usage="rightsize label [flags] [Beam pipeline options]",
                                 allow_abbrev=False, add_help=False, conflict_handler="resolve")
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser.parse_known_args(flags)[1]


def config_from_args(args: argparse.Namespace) -> LabelJobConfig:
    return LabelJobConfig(
        model=args.model, input=args.input, output=args.output, run_id=args.run_id or new_run_id(),
        threshold=args.threshold, text_field=args.text_field, pair_field=args.pair_field, id_field=args.id_field,
        batch_size=args.batch_size, chunk_size=args.chunk_size, max_batch_duration_secs=args.max_batch_duration_secs,
        reshuffle=args.reshuffle, share_model_across_processes=args.share_model_across_processes,
        model_copies=args.model_copies, dtype=args.dtype, threads=args.threads, tokenize_ahead=args.tokenize_ahead)
