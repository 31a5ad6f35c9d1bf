"""``partialface benchmark-occluded --model M --data ALIGNED --pairs FILE --out OUT``: the occlusion suite —
occluded-holistic and occluded-occluded pairs for each occluder kind and coverage level, the benchmark's
scoring convention. The protocols: :mod:`partialface.evaluation.occluded`.

``--realistic --data RAW_PHOTOS --masks MASKTHEFACE``: the realistic test instead (issue #39: a real mask,
sunglasses, a hand or a crop on the raw photo, then detection, alignment and the model, as a user's pipeline;
:mod:`partialface.evaluation.realistic`)."""

from __future__ import annotations

import argparse
import sys

from partialface.jobs.benchmark import add_infer_argument
from partialface.jobs.benchmark_identify import _floats


def configure(parser: argparse.ArgumentParser) -> None:
    from partialface.evaluation.occluded import COVERAGES, SUITE_KINDS
    from partialface.geometry.realistic import REALISTIC_KINDS

    parser.add_argument("--model", action="append", default=None,
                        help="a shipped model's name, run folder or .safetensors file; repeat for several "
                        "(default: the shipped default)")
    parser.add_argument("--data", required=True, help="aligned LFW-layout folder (160x160 PNGs: partialface align); "
                        "with --realistic the raw photos (LFW layout, .jpg)")
    parser.add_argument("--realistic", action="store_true",
                        help="the realistic test: occluders on the raw photos, then the whole pipeline")
    parser.add_argument("--masks", default=None,
                        help="--realistic: MaskTheFace's folder (holding masks/masks.cfg), the real mask images")
    parser.add_argument("--visibility", default=None,
                        help="--realistic: the visibility network for the kind-auto columns (default: the shipped one)")
    parser.add_argument("--detector", default="mtcnn",
                        choices=("mtcnn", "yunet", "mtcnn+yunet", "mtcnn+low", "yunet-ms", "mtcnn+yunet-ms"),
                        help="--realistic: the face detector of the photos compared (default mtcnn, the spec's; "
                        "auto's choice for photos is mtcnn+yunet); its results go beside MTCNN's, named after it")
    parser.add_argument("--pairs", required=True, help="pairs file (LFW format)")
    parser.add_argument("--out", required=True,
                        help="output folder (occluded.json, occluded.md, a figure, embeddings/)")
    parser.add_argument("--kinds", default=None, help=f"occluders (default {','.join(SUITE_KINDS)}; with --realistic "
                        f"{','.join(REALISTIC_KINDS)})")
    parser.add_argument("--coverages", type=_floats, default=list(COVERAGES),
                        help="fractions of the face area hidden (default 0.2,0.3,0.4)")
    parser.add_argument("--looks", type=int, default=61, help="looks drawn per kind and level (default 61)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    add_infer_argument(parser)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from partialface.errors import PartialFaceError
    from partialface.evaluation.benchmark import check_options
    from partialface.evaluation.occluded import SUITE_KINDS, occluded_markdown, run_occluded_benchmark
    from partialface.models.catalogue import DEFAULT_MODEL

    check_options(args.batch_size, args.workers, [0.3])
    if args.looks < 1:
        raise PartialFaceError(f"--looks {args.looks}: must be >= 1")
    if args.realistic:
        from partialface.evaluation.realistic import realistic_markdown, run_realistic_benchmark
        from partialface.geometry.realistic import REALISTIC_KINDS

        if args.masks is None:
            raise PartialFaceError("--realistic: give --masks, MaskTheFace's folder (the one holding masks/masks.cfg)")
        kinds = [k for k in (args.kinds or ",".join(REALISTIC_KINDS)).split(",") if k]
        result = run_realistic_benchmark(args.model or [DEFAULT_MODEL], args.data, args.pairs, args.out,
                                         masks=args.masks, kinds=kinds, seed=args.seed, device=args.device,
                                         infer=args.infer, batch_size=args.batch_size, progress=not args.no_progress,
                                         visibility=args.visibility, detector=args.detector)
        sys.stdout.write(realistic_markdown(result))
        print(f"results: {args.out}/realistic{'' if args.detector == 'mtcnn' else '-' + args.detector}.json")
        return 0
    if args.masks is not None or args.detector != "mtcnn":
        raise PartialFaceError(f"{'--masks' if args.masks is not None else '--detector'}: only with --realistic")
    res = run_occluded_benchmark(args.model or [DEFAULT_MODEL], args.data, args.pairs, args.out,
                                 kinds=[k for k in (args.kinds or "").split(",") if k] or list(SUITE_KINDS),
                                 coverages=args.coverages,
                                 looks=args.looks, seed=args.seed, device=args.device, infer=args.infer,
                                 batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress)
    sys.stdout.write(occluded_markdown(res["rows"]))
    print(f"results: {args.out}/occluded.json")
    return 0
