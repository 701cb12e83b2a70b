"""`mnist37-predict [--checkpoint PATH] IMAGE...`: which digit is in each picture?

Pictures of any size and colour mode, photos of a digit on paper included, are turned into
MNIST-like inputs: the ink is told from the paper (uneven light and noise included), then the digit
is normalised the way MNIST itself was made: light ink on black, fitted into a 20x20 box (aspect
ratio kept) and centred by its centre of mass in a 28x28 image. A file that cannot be read gets an
error line of its own; the others are still predicted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from mnist37.errors import BadInputError

WORKING_SIDE = 160  # px: pictures are shrunk to this first; plenty for a 20 px digit, and every filter stays fast


def best_checkpoint(outputs: Path = Path("outputs"), digits: tuple[int, ...] = (3, 7)) -> tuple[Path, dict]:
    """(model.pt, its metrics.json) of the completed run under `outputs` trained on `digits` with the
    best valid accuracy; the newer one wins a tie."""
    from mnist37.run_folder import completed_metrics

    runs = []
    for checkpoint in outputs.glob("**/model.pt") if outputs.is_dir() else []:
        metrics = completed_metrics(checkpoint.parent)  # a run without readable metrics can't be ranked
        accuracy = metrics.get("valid_accuracy") if metrics else None
        if isinstance(accuracy, float) and math.isfinite(accuracy):
            runs.append((checkpoint, metrics))
    if not runs:
        raise BadInputError(f"no completed run found under {outputs}/: train one with `python -m mnist37.train`, "
                            "or pass --checkpoint PATH")
    matching = [(c, m) for c, m in runs if tuple(m.get("digits", ())) == digits]
    if not matching:
        found = sorted({",".join(map(str, m.get("digits", []))) for _, m in runs})
        raise BadInputError(f"no completed run for digits {','.join(map(str, digits))} under {outputs}/ "
                            f"(its runs are for {' or '.join(found)}): pass --digits or --checkpoint")
    return max(matching, key=lambda run: (run[1]["valid_accuracy"], run[0].stat().st_mtime))


def gray_pixels(image):
    """A PIL image of any mode as a (height, width) float32 array in [0, 1], white = 1."""
    import numpy as np
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode == "F" or image.mode.startswith("I"):  # 32-bit float or 16/32-bit integer pixels
        values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if image.mode == "F" and values.min() >= 0 and values.max() <= 1:
            return values  # already brightness in [0, 1]
        full = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        return np.clip(values / full, 0, 1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        opaque = Image.new("RGBA", image.size, "white")  # transparent means paper
        image = Image.alpha_composite(opaque, image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def to_mnist(image, background: str = "auto") -> torch.Tensor:
    """A PIL image -> (28, 28) float tensor in [0, 1], light digit on black, centred like MNIST.

    background: "dark" (light ink, as MNIST), "light" (dark ink, as on paper) or "auto" (decided by
    the image's border, which is background in any sensible picture of a digit). A 28x28 picture
    with light ink on a dark background is MNIST already and is used as it is. Anything else is
    cleaned up the way document scanners do it, then normalised the way MNIST was made:
      1. shrink to WORKING_SIDE, anti-aliased: noise averages out and the filters stay fast;
      2. estimate the paper, uneven light included, as what a grey opening wider than any pen
         stroke leaves (strokes are thin, shadows and tints are broad), and subtract it;
      3. Otsu's threshold on the corrected image tells ink from paper; specks are dropped;
      4. the ink, cut to its bounding box, is fitted into 20x20 (aspect kept, anti-aliased) and
         placed in 28x28 with its centre of mass at the centre.
    """
    import numpy as np
    from scipy import ndimage
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import dilation, remove_small_objects
    from skimage.transform import rescale, resize

    gray = gray_pixels(image)
    if background == "auto":
        border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        background = "light" if np.median(border) > 0.5 else "dark"
    ink = 1 - gray if background == "light" else gray
    if ink.shape == (28, 28) and background == "dark":
        return torch.from_numpy(ink.copy())

    if max(ink.shape) > WORKING_SIDE:
        ink = rescale(ink, WORKING_SIDE / max(ink.shape), anti_aliasing=True)
    stroke_room = max(3, max(ink.shape) // 4)
    paper = gaussian(ndimage.grey_opening(ink, size=(stroke_room, stroke_room)), sigma=stroke_room / 4)
    ink = np.clip(ink - paper, 0, None)
    if ink.max() <= 0.05:
        raise BadInputError("no digit found: the image is blank")
    smooth = gaussian(ink, sigma=1)
    mask = remove_small_objects(smooth > threshold_otsu(smooth), max_size=max(2, ink.size // 2000))
    if not mask.any():
        raise BadInputError("no digit found: the image is blank")
    strokes = dilation(mask)  # the threshold cuts through the strokes' soft edges: take those too
    ink = np.clip(np.where(strokes, ink, 0) / np.percentile(ink[mask], 95), 0, 1)  # cores full white, as in MNIST

    rows, cols = np.nonzero(strokes)
    box = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    scale = 20 / max(box.shape)
    height, width = (max(1, round(side * scale)) for side in box.shape)
    digit = np.clip(resize(box, (height, width), anti_aliasing=True), 0, 1).astype(np.float32)
    centre_y, centre_x = ndimage.center_of_mass(digit)
    top = min(max(round(14 - centre_y - 0.5), 0), 28 - height)
    left = min(max(round(14 - centre_x - 0.5), 0), 28 - width)
    canvas = torch.zeros(28, 28)
    canvas[top: top + height, left: left + width] = torch.from_numpy(digit)
    return canvas


def read_image(path: Path, background: str = "auto") -> torch.Tensor:
    """The file at `path` as an MNIST-like (28, 28) tensor, or a BadInputError naming the file."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its pixel limit: a picture that big is refused all the same.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return to_mnist(image, background)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInputError(f"{path}: too many pixels to be a picture of a digit (more than "
                            f"{Image.MAX_IMAGE_PIXELS:,}): scale it down") from None
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadInputError(f"{path}: not a readable image ({error}); give a PNG or JPEG file") from None
    except BadInputError as error:
        raise BadInputError(f"{path}: {error}") from None


def explanation_path(folder: Path, stem: str, written: set[Path]) -> Path:
    """FOLDER/STEM.explain.png, or STEM-2.explain.png, ... when this call wrote that one already
    (a/x.png and b/x.png into one --explain-dir)."""
    picture, n = folder / f"{stem}.explain.png", 1
    while picture in written:
        n += 1
        picture = folder / f"{stem}-{n}.explain.png"
    return picture


def parse_digits_option(text: str) -> tuple[int, ...]:
    from mnist37.data import parse_digits

    try:
        return parse_digits(text if text.strip().lower() == "all" else [int(d) for d in text.split(",")])
    except (BadInputError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: give two or more distinct digits in 0-9, e.g. 3,7, or all") from None


def predict_file(model, path: Path, background: str, explain_dir: Path | None, written: set[Path]) -> dict:
    """The digit in the picture at `path`, as a JSON-ready dict, with its explanation written into
    `explain_dir` when one is given. Any failure is the dict's "error", for this file alone."""
    from mnist37.explain import explain, render

    try:
        image = read_image(path, background)
    except BadInputError as error:
        return {"file": str(path), "error": str(error)}
    with torch.no_grad():
        probabilities = model.probabilities(model(image.reshape(1, -1)))[0]
    best = int(probabilities.argmax())
    result = {
        "file": str(path),
        "digit": model.digits[best],
        "probability": round(float(probabilities[best]), 4),
        "probabilities": {str(d): round(float(p), 4) for d, p in zip(model.digits, probabilities)},
    }
    if explain_dir is None:
        return result
    (explanation,) = explain(model, image.reshape(1, -1))
    picture = explanation_path(explain_dir, path.stem, written)
    result |= {"explanation": explanation.numbers, "summary": explanation.summary()}
    try:
        picture.parent.mkdir(parents=True, exist_ok=True)
        render(explanation, title=path.name).save(picture)
        written.add(picture)
        result["explanation_png"] = str(picture)
    except OSError as error:
        reason = "not a folder" if isinstance(error, (FileExistsError, NotADirectoryError)) else error.strerror
        result["error"] = f"{path}: could not write {picture} ({picture.parent}: {reason or error})"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist37-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG or JPEG files")
    parser.add_argument("--checkpoint", type=Path,
                        help="model.pt or a run folder (default: the best completed run under outputs/ for --digits)")
    parser.add_argument("--digits", type=parse_digits_option, default=(3, 7),
                        help="without --checkpoint: the digits the run was trained on (default 3,7; or all)")
    parser.add_argument("--background", choices=["auto", "dark", "light"], default="auto",
                        help="light: dark ink on a light background (paper); auto decides from the border")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--explain", action="store_true",
                        help="also write IMAGE.explain.png (input as the model saw it, weights, x * w, numbers)")
    parser.add_argument("--explain-dir", type=Path, help="where the .explain.png files go (default: next to each image)")
    args = parser.parse_args(argv)

    from mnist37.checkpoints import load_model

    try:
        checkpoint = args.checkpoint or best_checkpoint(digits=args.digits)[0]
        model = load_model(checkpoint)
    except BadInputError as error:
        print(f"mnist37-predict: error: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"checkpoint: {checkpoint} ({type(model).__name__}, digits {','.join(map(str, model.digits))})")

    results, written = [], set()
    for path in args.images:
        explain_dir = (args.explain_dir or path.parent) if args.explain else None
        result = predict_file(model, path, args.background, explain_dir, written)
        results.append(result)
        if "error" in result:
            print(f"mnist37-predict: error: {result['error']}", file=sys.stderr)
        if not args.json and "digit" in result:
            print(f"{path}: {result['digit']} (p={result['probability']:.2f})")
            if "explanation_png" in result:
                print(f"  {result['summary']}  -> {result['explanation_png']}")
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), "predictions": results}, indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
