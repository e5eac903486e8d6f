"""Rate–distortion–perception curves of one model over its 16 levels, with real bitstreams.

    python eval.py                                    # runs/tiny on scikit-image's photos
    python eval.py --checkpoint runs/paper --data /data/kodak --out runs/paper/eval_kodak
    python eval.py --official-checkpoint sic.pth --config configs/paper.py --data tfds:div2k
    python eval.py ... --samples 8 --levels 1,4,8,16 --compare baselines/demo.json
    python eval.py ... --inception pt_inception-2015-12-05-6726825d.pth   # adds FID/KID

Writes <out>/results.json (per level and per image), results.csv, results_per_image.csv,
rd_<metric>.png and grid.png. Re-plot from the JSON alone with
`python -m svi_jax.evaluation.plots <out>/results.json --compare ...`.
Images are read with their EXIF orientation applied (as viewers show them); images of any
size are coded (padded as the codec pads); metrics an image is too small for are NaN and
listed under "unavailable" for that image; FID/KID from no more patches than the feature
dimension are flagged ("too_few_patches"). An --out whose files would replace an input is
refused before any work, and so is an --out inside the --data folder (its plots would be read
as images by the next run); results are written only at the end, each file atomically.
A mistake in a flag or an input (a missing checkpoint, --levels 9-5) prints one line,
`eval.py: error: ...` naming the flag or file, and exits with status 1 (2 only for argparse's
usage errors, as in svi-codec); images that do not decode are all named at once (a count, then
one line per file, the first 20) before anything is compiled. Files with an image extension that
svi_jax does not read (.heic, .avif, ...) are named in one note. Sizes print as W x H.
"""

import argparse
import pathlib
import sys

# Relative to the current directory, as train.py's default --workdir and svi-codec's default
# --checkpoint are: `python train.py && python eval.py` from any one folder meet.
DEFAULT_WORKDIR = pathlib.Path("runs") / "tiny"
PROG = "eval.py"
FLAT_PSNR_DB = 0.1  # PSNR spread over the levels below which the latent is not being used


def flat_curve_warning(levels: list[dict]) -> str | None:
    """A warning when every evaluated level has the same PSNR (within FLAT_PSNR_DB): the
    decoder's output does not depend on the transmitted latent (an untrained or collapsed
    model), so the rate buys nothing. None for a working curve or fewer than two levels."""
    psnr = [r["psnr"] for r in levels if isinstance(r.get("psnr"), float | int)]
    psnr = [p for p in psnr if p == p and abs(p) != float("inf")]
    if len(psnr) < 2 or max(psnr) - min(psnr) > FLAT_PSNR_DB:
        return None
    return (
        f"warning: PSNR is {min(psnr):.2f}-{max(psnr):.2f} dB at all {len(psnr)} levels "
        f"(within {FLAT_PSNR_DB} dB): the model ignores its latent (untrained or collapsed), "
        "so more bits buy no quality"
    )


def parse_levels(text: str | None) -> tuple[int, ...] | None:
    """'1,4,8-16' -> (1, 4, 8, ..., 16); None or 'all' -> None (every level).

    Raises ValueError naming --levels for a part that is no integer or a reversed range
    ('9-5', '16-1'): never a silent fallback to all levels. Called by main (not as argparse's
    type=) so that the mistake is one `eval.py: error:` line, exit 1, like every input error."""
    if not text or text == "all":
        return None
    out = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise ValueError(f"bad --levels {text!r} (e.g. 1,4,8-16)") from None
        if last < first:
            raise ValueError(
                f"bad --levels {text!r}: range {part.strip()} runs backwards (write {last}-{first})"
            )
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def _error(message: str) -> int:
    """One line on stderr as train.py and svi-codec print it; exit status 1 (README). A
    message of several lines (a count, then one line per bad image) keeps its lines, each cut
    to one line."""
    from svi_jax.safety import one_line

    first, *rest = message.split("\n")
    print(f"{PROG}: error: {one_line(ValueError(first), 1000)}", file=sys.stderr)
    for line in rest:
        print(f"  {one_line(ValueError(line), 1000)}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint",
        help="export dir or train.py workdir (default runs/tiny in the current directory)",
    )
    p.add_argument("--official-checkpoint", help="official PyTorch state dict (.pth or .npz)")
    p.add_argument("--config", help="configs/<name>.py (required with --official-checkpoint)")
    p.add_argument(
        "--data",
        help="image folder/file, 'skimage' (default: 256-px centre crops of the bundled photos), "
        "'skimage-full' or tfds:NAME[:SPLIT]. EXIF orientation is applied as viewers do",
    )
    p.add_argument("--levels", help="levels, e.g. 1,4,8-16 (default all)")
    p.add_argument("--samples", type=int, default=1, help="detail samples M per level")
    p.add_argument("--seed", type=int, default=0, help="first detail-sampling seed")
    p.add_argument(
        "--out", help="output folder (default <checkpoint>/eval); not inside the --data folder"
    )
    p.add_argument("--compare", nargs="*", default=[], help="reference curves (JSON) to plot")
    p.add_argument(
        "--inception",
        help="FID/KID network: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or an .npz "
        "of it), or a .py file defining feature_fn; 'none' skips FID/KID. Default: "
        "$SVI_INCEPTION_WEIGHTS, else pytorch-fid's copy in torch hub's cache if there, else none",
    )
    p.add_argument(
        "--synthesis-batch", type=int, help="syntheses per g_s call (default: 16, 1 on CPU)"
    )
    p.add_argument("--metric-batch", type=int, default=4, help="images per metric-network call")
    p.add_argument("--name", help="curve name in results.json and the plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        levels = parse_levels(args.levels)
    except ValueError as error:
        return _error(str(error))
    from svi_jax import evaluation as ev
    from svi_jax.compilation import enable_persistent_cache

    enable_persistent_cache()  # the next eval.py loads its compiled passes

    checkpoint = args.checkpoint
    if checkpoint is None and args.official_checkpoint is None:
        if not (DEFAULT_WORKDIR / "export" / "export.json").exists():
            return _error(
                f"no checkpoint in {DEFAULT_WORKDIR.absolute()} (the default --checkpoint, "
                "runs/tiny relative to the current directory): run python train.py first here, "
                "or give --checkpoint"
            )
        checkpoint = str(DEFAULT_WORKDIR)
    if args.out:
        out = args.out
    elif checkpoint:
        out = pathlib.Path(checkpoint) / "eval"
    else:  # next to the official checkpoint: sic.pth -> sic_eval/
        out = f"{pathlib.Path(args.official_checkpoint).with_suffix('')}_eval"
    settings = ev.EvalSettings(
        levels=levels,
        samples=args.samples,
        seed=args.seed,
        synthesis_batch=args.synthesis_batch,
        metric_batch=args.metric_batch,
    )
    from svi_jax.safety import fail_in_one_line

    try:
        ev.check_outputs(
            out,
            [checkpoint, args.official_checkpoint, args.config, args.inception, *args.compare],
            args.data,
        )
        source = ev.load_model(checkpoint, args.official_checkpoint, args.config)
        ev.runner.check_settings(settings, source.config.model.num_slices)  # before any work
        for path in args.compare:  # a bad --compare file: now, not after the long run
            ev.load_curve(path)
        # Every image decoded, all bad files named at once, before anything is compiled.
        dataset = ev.load_dataset(args.data)
        for note in dataset.notes:  # skipped extensions, multi-frame files
            print(f"note: {note}", file=sys.stderr)
        inception = args.inception
        if inception is None:
            found = ev.find_inception_weights()
            if found:
                print(f"FID/KID with {found} (--inception none skips them)", file=sys.stderr)
            inception = str(found) if found else None
        feature_fn = None if inception == "none" else ev.load_feature_fn(inception)
        if feature_fn is None:
            print(
                f"FID/KID skipped: give --inception {ev.FID_WEIGHTS_NAME} "
                "(pytorch-fid's FID weights) to compute them",
                file=sys.stderr,
            )
        with fail_in_one_line("eval.py"):  # out of memory, XLA failures: one line, exit 1
            results = ev.run_evaluation(
                source,
                dataset,
                out,
                settings,
                compare=args.compare,
                feature_fn=feature_fn,
                progress=not args.no_progress,
                name=args.name,
            )
    except ev.EvalInputError as error:
        return _error(str(error))
    for note in results.get("notes", []):
        if feature_fn is None and note.startswith("FID/KID skipped"):
            continue  # said before the run, with how to enable them
        print(f"note: {note}", file=sys.stderr)
    for row in results["levels"]:
        print(
            f"level {row['level']:2d}: {row['bpp']:.4f} bpp (est {row['bpp_est']:.4f})  "
            f"PSNR {row['psnr']:.2f}  LPIPS {row['lpips_alex']:.4f}  DISTS {row['dists']:.4f}"
        )
    warning = flat_curve_warning(results["levels"])
    if warning:
        print(warning, file=sys.stderr)
    print(f"results: {pathlib.Path(out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
