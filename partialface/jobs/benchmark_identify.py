"""``partialface benchmark-identify --model M --data DIR --out OUT``: open-set 1:N identification on an
LFW-layout folder (aligned 160x160 PNGs, or raw photos aligned first): rank-1, CMC and DIR@FPIR for whole
and partial probes. The split and the metrics' convention: :mod:`partialface.evaluation.openset`."""

from __future__ import annotations

import argparse
import sys


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, e.g. 0.2,0.3") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="a shipped model's name, run folder or .safetensors file (default: the shipped default)")
    parser.add_argument("--data", required=True, help="LFW-layout folder (DIR/identity/images)")
    parser.add_argument("--out", required=True, help="output folder (identify.json, identify.md, embeddings/)")
    parser.add_argument("--factors", type=_floats, default=[0.3], help="partial probes' size factors (default 0.3)")
    parser.add_argument("--parts", default="lEye,rEye,Nose,Mouth", help="partial probes' parts (default all four)")
    parser.add_argument("--centred", action="store_true", help="centred partial probes (default: non-centred)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from partialface.evaluation.benchmark import check_options
    from partialface.evaluation.openset import identify_markdown, run_identify_benchmark
    from partialface.models.catalogue import DEFAULT_MODEL

    check_options(args.batch_size, args.workers, args.factors)
    res = run_identify_benchmark(args.model or DEFAULT_MODEL, args.data, args.out, factors=args.factors,
                                 parts=[p for p in args.parts.split(",") if p], centred=args.centred,
                                 device=args.device, batch_size=args.batch_size, workers=args.workers,
                                 progress=not args.no_progress)
    sys.stdout.write(identify_markdown(res["rows"]))
    print(f"results: {args.out}/identify.json")
    return 0
