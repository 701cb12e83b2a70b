"""What each pixel did to one answer: the lesson's `x @ w + b`, taken apart, and drawn.

For the linear model the logit *is* a sum over pixels, so the breakdown is exact:
    logit = sum(x * w) + b
`x * w` is the contribution map: blue pixels pushed towards the first digit (or towards the digit
the map is for), red ones away from it. The bias then moves the total, and sigmoid (softmax for
more digits) turns it into a probability.

Other models are explained honestly for what they are (each model's `explain_rows` picks):
  template  |x - m| for the ideal (mean) image of each of the two candidate digits, and their means:
            the asker's own abs(pixel - weight) idea; the smaller mean distance wins.
  others    (MLP, CNN, a model of your own) x * d(logit)/dx, "gradient x input" saliency: which
            inked pixels the logit is sensitive to. Its sum is NOT the logit, and the numbers say so.
With more than two digits, each explanation covers the predicted digit and the runner-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnist37.models import Classifier, evaluating


@dataclass
class Explanation:
    image: torch.Tensor  # (28, 28) the input, ink in [0, 1]
    maps: list[tuple[str, torch.Tensor]]  # titled (28, 28) signed maps, drawn left to right
    numbers: dict[str, float | int | str]  # what the maps add up to, and the answer
    same_scale: bool = True  # draw the maps on one colour scale (they measure the same thing)

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.numbers.items())


def candidates(model: Classifier, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, runner-up class) per row."""
    if model.n_outputs == 1:
        predicted = model.classes(logits)
        return predicted, 1 - predicted
    top2 = logits.topk(2, dim=-1).indices
    return top2[:, 0], top2[:, 1]


def explain(model: Classifier, x: torch.Tensor) -> list[Explanation]:
    """One Explanation per row of x (N, 784), computed on x's device, returned on the CPU."""
    with evaluating(model):
        with torch.no_grad():
            logits = model(x)
            probabilities = model.probabilities(logits)
        predicted, runner_up = candidates(model, logits)
        return model.explain_rows(x, logits, probabilities, predicted, runner_up)  # each model knows its own


def answer(model, probabilities, row, predicted) -> dict:
    digit = model.digits[int(predicted[row])]
    return {"predicted": digit, "probability": float(probabilities[row, predicted[row]])}


def explain_linear(model, x, logits, probabilities, predicted, runner_up) -> list[Explanation]:
    weights = model.weights.detach().reshape(784, -1)
    bias = model.bias.detach().reshape(-1) if model.bias is not None else torch.zeros(weights.shape[1], device=x.device)
    explanations = []
    for row in range(len(x)):
        image = x[row].cpu().reshape(28, 28)
        if model.n_outputs == 1:
            contribution = x[row] * weights[:, 0]
            first = model.digits[0]
            explanations.append(Explanation(image, [
                (f"w (blue: {first})", weights[:, 0].cpu().reshape(28, 28)),
                ("x * w", contribution.cpu().reshape(28, 28)),
            ], {"sum": float(contribution.sum()), "bias": float(bias[0]), "logit": float(logits[row]),
                **answer(model, probabilities, row, predicted)}, same_scale=False))  # weights vs x * w
            continue
        maps, numbers = [], {}
        for role, k in (("", int(predicted[row])), ("runner-up ", int(runner_up[row]))):
            contribution = x[row] * weights[:, k]
            digit = model.digits[k]
            maps.append((f"{role}x * w[{digit}]", contribution.cpu().reshape(28, 28)))
            numbers |= {f"sum[{digit}]": float(contribution.sum()), f"bias[{digit}]": float(bias[k]),
                        f"logit[{digit}]": float(logits[row, k])}
        explanations.append(Explanation(image, maps, numbers | answer(model, probabilities, row, predicted)))
    return explanations


def explain_template(model, x, logits, probabilities, predicted, runner_up) -> list[Explanation]:
    squared = "^2" if model.hparams["distance"] == "l2" else ""
    explanations = []
    for row in range(len(x)):
        maps, numbers = [], {}
        for k in (int(predicted[row]), int(runner_up[row])):
            distance = model.pixel_distances(x[row:row + 1], k)[0]
            digit = model.digits[k]
            # drawn negative (red): distance is evidence against that digit
            maps.append((f"|x - m{digit}|{squared}", -distance.cpu().reshape(28, 28)))
            numbers[f"mean distance to {digit}"] = float(distance.mean())
        explanations.append(Explanation(x[row].cpu().reshape(28, 28), maps,
                                        numbers | answer(model, probabilities, row, predicted)))
    return explanations


def explain_saliency(model, x, logits, probabilities, predicted, runner_up) -> list[Explanation]:
    explanations = []
    for row in range(len(x)):
        maps, numbers = [], {}
        classes = [int(predicted[row])] if model.n_outputs == 1 else [int(predicted[row]), int(runner_up[row])]
        for k in classes:
            pixels = x[row:row + 1].detach().clone().requires_grad_(True)
            logit = model(pixels)[0] if model.n_outputs == 1 else model(pixels)[0, k]
            (gradient,) = torch.autograd.grad(logit, pixels)
            saliency = (pixels * gradient).detach()[0]
            name = "logit" if model.n_outputs == 1 else f"logit[{model.digits[k]}]"
            title = f"x * d{name}/dx"
            maps.append((title, saliency.cpu().reshape(28, 28)))
            numbers[name] = float(logit.detach())
            numbers[f"map sum, not the {name}"] = float(saliency.sum())
        explanations.append(Explanation(x[row].cpu().reshape(28, 28), maps,
                                        numbers | answer(model, probabilities, row, predicted)))
    return explanations


def signed_rgb(maps: torch.Tensor, same_scale: bool = False) -> torch.Tensor:
    """(K, 28, 28) signed maps -> (K, 3, 28, 28) RGB: blue > 0, white = 0, red < 0.

    Each map is scaled by its own largest |value| (or all by the largest of all, `same_scale`),
    symmetrically, so zero stays white and the sign is never lost: blue pixels vote for the first
    digit (or for that digit's class), red ones against.
    """
    dims = (-3, -2, -1) if same_scale else (-2, -1)
    scale = maps.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)
    v = (maps / scale).float().cpu()
    red, blue = 1 - v.clamp(min=0), 1 + v.clamp(max=0)
    green = 1 - v.abs()
    return torch.stack([red, green, blue], dim=1)


def panels_of(explanation: Explanation) -> torch.Tensor:
    """(P, 3, 28, 28) RGB panels: the input in grey, then each map (blue > 0, red < 0)."""
    maps = signed_rgb(torch.stack([m for _, m in explanation.maps]), same_scale=explanation.same_scale)
    return torch.cat([explanation.image.clamp(0, 1).expand(1, 3, 28, 28), maps])


def draw_cards(panels: torch.Tensor, headings: list[list[str]], notes: list[list[str]], columns: int, scale: int):
    """One PIL picture of N cards in a grid: card i shows panels[i] ((P, 3, 28, 28), side by side,
    enlarged `scale` times) under headings[i] (one per panel), with the lines notes[i] below.

    Everything is laid out on one tensor canvas and becomes one PIL image: one copy of the
    pixels however many cards there are (TensorBoard draws 16 of them per snapshot).
    """
    from PIL import Image, ImageDraw

    n, p = panels.shape[:2]
    size, gap, line = 28 * scale, 8, 12
    heading = line + 2 if any(any(h) for h in headings) else 0
    n_lines = max(map(len, notes), default=0)
    widest_note = max((len(text) for lines in notes for text in lines), default=0)
    card_width = max(p * (size + gap) + gap, 7 * widest_note + 2 * gap)
    card_height = heading + size + (gap + line * n_lines if n_lines else 0) + gap
    rows = -(-n // columns)
    enlarged = panels.float().cpu().repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    canvas = torch.ones(3, rows * card_height, columns * card_width)
    for i in range(n):
        top, left = (i // columns) * card_height + heading, (i % columns) * card_width + gap
        for j in range(p):
            canvas[:, top: top + size, left + j * (size + gap): left + j * (size + gap) + size] = enlarged[i, j]
    sheet = Image.fromarray((canvas * 255).round().byte().permute(1, 2, 0).numpy(), "RGB")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        top, left = (i // columns) * card_height, (i % columns) * card_width + gap
        for j, text in enumerate(headings[i]):
            draw.text((left + j * (size + gap), top + 1), text[: size // 6], fill="black")
        for k, text in enumerate(notes[i]):
            draw.text((left, top + heading + size + gap // 2 + line * k), text, fill="black")
    return sheet


def as_tensor(picture) -> torch.Tensor:
    """A PIL RGB picture as a (3, H, W) float tensor in [0, 1], as TensorBoard's add_image takes it."""
    return torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8).reshape(
        picture.height, picture.width, 3).permute(2, 0, 1).float() / 255


def number_lines(explanation: Explanation) -> list[str]:
    return [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in explanation.numbers.items()]


def render(explanation: Explanation, scale: int = 4, title: str = "", numbers: bool = True):
    """A PIL image: the input, then each map (blue > 0, red < 0), then (unless told not) the numbers."""
    headings = [title or "input", *(name for name, _ in explanation.maps)]
    return draw_cards(panels_of(explanation)[None], [headings], [number_lines(explanation) if numbers else []],
                      columns=1, scale=scale)


def render_sheet(explanations: list[Explanation], titles: list[str], columns: int = 2, scale: int = 3):
    """Several explanations in one picture, without their numbers (those go in a table)."""
    panels = torch.stack([panels_of(e) for e in explanations])
    headings = [[title, *(name for name, _ in e.maps)] for e, title in zip(explanations, titles)]
    return draw_cards(panels, headings, [[] for _ in explanations], columns=columns, scale=scale)


@torch.no_grad()
def predictions(model: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class per row, as accuracy counts it; (N, n_digits) probabilities)."""
    with evaluating(model):
        logits = model(x)
    return model.classes(logits), model.probabilities(logits)


def mistakes(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row indices, predicted class, probability) of every wrong prediction, most confident first."""
    predicted, probabilities = predictions(model, x)
    confidence = probabilities.gather(1, predicted[:, None])[:, 0]
    wrong = (predicted != y).nonzero().flatten()
    order = confidence[wrong].argsort(descending=True)
    wrong = wrong[order]
    return wrong, predicted[wrong], confidence[wrong]


def mistakes_grid(model: Classifier, x: torch.Tensor, y: torch.Tensor, limit: int = 64, scale: int = 2):
    """The wrong predictions as labelled tiles ("3 said 7 / p=0.98"), most confident first: a
    (3, H, W) tensor (None when there are none) and the number of mistakes."""
    wrong, predicted, confidence = mistakes(model, x, y)
    count = len(wrong)
    if not count:
        return None, 0
    wrong, predicted, confidence = wrong[:limit], predicted[:limit].tolist(), confidence[:limit].tolist()
    images = x[wrong].reshape(-1, 1, 1, 28, 28).clamp(0, 1).expand(-1, 1, 3, 28, 28)
    truths = y[wrong].tolist()
    notes = [[f"{model.digits[t]} said {model.digits[s]}", f"p={p:.2f}"] for t, s, p in zip(truths, predicted, confidence)]
    sheet = draw_cards(images, [[] for _ in notes], notes, columns=8, scale=scale)
    return as_tensor(sheet), count


def confusion_matrix(predicted: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(k, k) counts of predicted classes against true classes y: row = true, column = predicted."""
    return torch.bincount(y * k + predicted, minlength=k * k).reshape(k, k).cpu()


def confusion_markdown(matrix: torch.Tensor, digits) -> str:
    header = "| true \\ predicted | " + " | ".join(str(d) for d in digits) + " |"
    rule = "|" + "---|" * (len(digits) + 1)
    rows = [f"| **{d}** | " + " | ".join(str(int(n)) for n in counts) + " |" for d, counts in zip(digits, matrix)]
    return "\n".join([header, rule, *rows])
