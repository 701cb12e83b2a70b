"""`mnist37-predict [--checkpoint PATH] IMAGE...`: which digit is in each picture?

Pictures of any size and colour mode are turned into MNIST-like inputs the way MNIST itself was
made: grayscale, light ink on a dark background, the digit fitted into a 20x20 box (aspect ratio
kept) and centred by its centre of mass in a 28x28 image. A file that cannot be read gets an error
line of its own; the others are still predicted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from mnist37.errors import BadInputError

INK_THRESHOLD = 0.25  # of the brightest ink: fainter pixels don't count for the digit's bounding box


def newest_checkpoint(outputs: Path = Path("outputs")) -> Path:
    checkpoints = list(outputs.glob("**/model.pt")) if outputs.is_dir() else []
    if not checkpoints:
        raise BadInputError(
            f"no checkpoint found under {outputs}/: train one with `python -m mnist37.train`, or pass --checkpoint PATH"
        )
    return max(checkpoints, key=lambda p: p.stat().st_mtime)


def pixels(gray_image) -> torch.Tensor:
    """A mode "L" PIL image as a (height, width) float tensor in [0, 1]."""
    import numpy as np

    return torch.from_numpy(np.asarray(gray_image, dtype=np.float32) / 255)


def to_mnist(image, background: str = "auto") -> torch.Tensor:
    """A PIL image -> (28, 28) float tensor in [0, 1], light digit on black, centred like MNIST.

    background: "dark" (light ink, as MNIST), "light" (dark ink, as on paper) or "auto" (decided by
    the image's border, which is background in any sensible picture of a digit).
    """
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        opaque = Image.new("RGBA", image.size, "white")  # transparent means paper
        image = Image.alpha_composite(opaque, image.convert("RGBA"))
    gray = pixels(image.convert("L"))
    if background == "auto":
        border = torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        background = "light" if border.median() > 0.5 else "dark"
    ink = 1 - gray if background == "light" else gray
    ink = (ink - ink.min()).clamp_min(0)  # a grey background becomes black
    if ink.max() <= 0.05:
        raise BadInputError("no digit found: the image is blank")

    rows, cols = torch.nonzero(ink > INK_THRESHOLD * ink.max(), as_tuple=True)
    box = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    scale = 20 / max(box.shape)
    size = (max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))  # PIL: (width, height)
    fitted = Image.fromarray((box / box.max() * 255).byte().numpy(), mode="L").resize(size, Image.LANCZOS)
    digit = pixels(fitted)

    # Centre of mass to the centre of the 28x28 canvas, as MNIST did.
    ys, xs = torch.arange(digit.shape[0], dtype=torch.float32), torch.arange(digit.shape[1], dtype=torch.float32)
    mass = digit.sum()
    top = round(14 - float((digit.sum(dim=1) * ys).sum() / mass) - 0.5)
    left = round(14 - float((digit.sum(dim=0) * xs).sum() / mass) - 0.5)
    top, left = min(max(top, 0), 28 - digit.shape[0]), min(max(left, 0), 28 - digit.shape[1])
    canvas = torch.zeros(28, 28)
    canvas[top: top + digit.shape[0], left: left + digit.shape[1]] = digit
    return canvas


def read_image(path: Path, background: str = "auto") -> torch.Tensor:
    """The file at `path` as an MNIST-like (28, 28) tensor, or a BadInputError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return to_mnist(image, background)
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadInputError(f"{path}: not a readable image ({error}); give a PNG or JPEG file") from None
    except BadInputError as error:
        raise BadInputError(f"{path}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist37-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG or JPEG files")
    parser.add_argument("--checkpoint", type=Path, help="model.pt or a run folder (default: newest under outputs/)")
    parser.add_argument("--background", choices=["auto", "dark", "light"], default="auto",
                        help="light: dark ink on a light background (paper); auto decides from the border")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--explain", action="store_true",
                        help="also write IMAGE.explain.png (input, weights, x * w, numbers) and print the numbers")
    parser.add_argument("--explain-dir", type=Path, help="where the .explain.png files go (default: next to each image)")
    args = parser.parse_args(argv)

    from mnist37.checkpoints import load_model
    from mnist37.explain import explain, render

    try:
        checkpoint = args.checkpoint or newest_checkpoint()
        model = load_model(checkpoint)
    except BadInputError as error:
        print(f"mnist37-predict: error: {error}", file=sys.stderr)
        return 2

    results = []
    for path in args.images:
        try:
            image = read_image(path, args.background)
        except BadInputError as error:
            results.append({"file": str(path), "error": str(error)})
            print(f"mnist37-predict: error: {error}", file=sys.stderr)
            continue
        with torch.no_grad():
            probabilities = model.probabilities(model(image.reshape(1, -1)))[0]
        best = int(probabilities.argmax())
        result = {
            "file": str(path),
            "digit": model.digits[best],
            "probability": round(float(probabilities[best]), 4),
            "probabilities": {str(d): round(float(p), 4) for d, p in zip(model.digits, probabilities)},
        }
        if args.explain:
            (explanation,) = explain(model, image.reshape(1, -1))
            picture = (args.explain_dir or path.parent) / f"{path.stem}.explain.png"
            picture.parent.mkdir(parents=True, exist_ok=True)
            render(explanation, title=path.name).save(picture)
            result |= {"explanation": explanation.numbers, "explanation_png": str(picture)}
        results.append(result)
        if not args.json:
            print(f"{path}: {model.digits[best]} (p={float(probabilities[best]):.2f})")
            if args.explain:
                print(f"  {explanation.summary()}  -> {result['explanation_png']}")
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), "predictions": results}, indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
