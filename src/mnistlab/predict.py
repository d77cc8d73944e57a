"""Predict digits in ordinary image files: safe loading, MNIST-style preprocessing, batched top-k.

MNIST digits were made by taking a scanned digit, scaling its bounding box to fit 20x20
pixels (keeping the aspect ratio, antialiased) and pasting it into a 28x28 field so that
its centre of mass sits at the centre, white ink on black. `preprocess_image` repeats
those steps for any picture (a scan, a phone photo, a canvas drawing) so that a model
trained on MNIST sees what it was trained on:

1. grayscale (transparent pixels composited on white, palettes expanded);
2. invert when the digit is dark on a light background (the border's median is brighter
   than the image's mean);
3. subtract a smooth background estimate (uneven lighting in photos must not become ink),
   stretch the contrast to [0, 1] and zero faint noise;
4. crop to the ink's bounding box, scale its longer side to 20 px (LANCZOS);
5. paste into 28x28 with the centre of mass at the centre.

An image that already is a 28x28 white-on-black MNIST digit is passed through unchanged, so
writing MNIST's own test images to PNG and predicting them reproduces `mnistlab evaluate`.

A colour run (3 channels: CIFAR, a colour folder) gets none of the digit steps: each picture is
read as `folder:` datasets are read for training (RGB, resized keeping the aspect ratio and
centred on black, `mnistlab.data.images.read_image`), then normalised with the run's per-channel
mean and std.

Example:
    >>> predictor = Predictor.from_run("runs/fast")                         # doctest: +SKIP
    >>> results, errors = predictor.predict_paths(["digits/"], top_k=3)   # doctest: +SKIP
    >>> results[0].prediction, results[0].confidence                    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from mnistlab.data.images import (  # noqa: F401 - ImageError, MAX_PIXELS, open_image are this module's API too
    ALLOWED_FORMATS,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    ImageError,
    open_image,
    read_grayscale,
    read_image,
    square_image,
    to_grayscale,
)
from mnistlab.errors import CheckpointError, MnistlabError, UsageError

# Pixels below this share of the brightest ink are noise, not ink.
INK_THRESHOLD = 0.2


@dataclass
class Prediction:
    """The prediction for one image."""

    path: str
    prediction: str
    confidence: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON object `mnistlab predict --json` prints for this image."""
        return {
            "path": self.path,
            "prediction": self.prediction,
            "confidence": self.confidence,
            "top_k": [{"label": label, "probability": p} for label, p in self.top_k],
        }

    def to_line(self, top_k: int = 1) -> str:
        """`path  digit  confidence`, or `path  d:p  d:p ...` when top_k > 1."""
        if top_k > 1:
            return f"{self.path}  " + "  ".join(f"{label}:{p:.3f}" for label, p in self.top_k)
        return f"{self.path}  {self.prediction}  {self.confidence:.3f}"


# --------------------------------------------------------------------------- preprocessing


def _border(x: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of an image, as one flat array."""
    return np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])


def _min_max_filter(x: np.ndarray, k: int, op: Any) -> np.ndarray:
    """A k x k min or max filter, separable (rows then columns), edges padded by replication."""
    from numpy.lib.stride_tricks import sliding_window_view

    r = k // 2
    y = np.pad(x, ((0, 0), (r, r)), mode="edge")
    y = op(sliding_window_view(y, k, axis=1), axis=-1)
    y = np.pad(y, ((r, r), (0, 0)), mode="edge")
    return op(sliding_window_view(y, k, axis=0), axis=-1)


def _background(x: np.ndarray) -> np.ndarray:
    """A smooth estimate of the background under bright ink: a morphological opening at low resolution.

    The opening removes strokes narrower than its window (a fifth of the image), leaving the
    lighting gradient, which is then subtracted. Working on a 64 px copy keeps it cheap.
    """
    h, w = x.shape
    scale = 64 / max(h, w)
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(x, mode="F").resize(small_size, Image.Resampling.BILINEAR))
    k = max(3, (max(small.shape) // 5) | 1)
    # Pad first so the opening reproduces a lighting ramp right up to the edges (an opening
    # near an edge otherwise underestimates a rising background and makes a band of "ink").
    padded = np.pad(small, k, mode="edge")
    opened = _min_max_filter(_min_max_filter(padded, k, np.min), k, np.max)[k:-k, k:-k]
    # Bilinear upscaling smooths the low-resolution estimate.
    full = Image.fromarray(np.ascontiguousarray(opened, dtype=np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(full, dtype=np.float32)


def _is_mnist_like(x: np.ndarray, image_size: int) -> bool:
    """Already a white-on-black digit of the model's size: the border is (nearly) black."""
    return x.shape == (image_size, image_size) and float(np.median(_border(x))) < 0.1 and float(x.max()) > 0.1


def preprocess_array(x: np.ndarray, image_size: int = 28) -> np.ndarray:
    """MNIST-style preprocessing of a grayscale float image in [0, 1] -> [image_size, image_size] in [0, 1].

    See the module docstring for the steps. A blank image gives an all-black result.
    """
    x = np.asarray(x, dtype=np.float32)
    if _is_mnist_like(x, image_size):
        return x.copy()  # already an MNIST digit: keep its pixels exactly
    # 1. polarity: MNIST is white ink on black. Dark-on-light images have a bright border.
    if float(np.median(_border(x))) > float(x.mean()):
        x = 1.0 - x
    # 2. background subtraction and contrast stretch (photos: uneven light, grey paper).
    x = np.clip(x - _background(x), 0.0, None)
    top = float(x.max())
    out = np.zeros((image_size, image_size), dtype=np.float32)
    if top < 0.05:
        return out  # nothing that looks like ink
    x = x / top
    x[x < INK_THRESHOLD] = 0.0
    # 3. crop to the ink's bounding box.
    rows, cols = np.nonzero(x)
    x = x[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # 4. the longer side to 20 px (MNIST's 20 of 28), aspect kept, antialiased.
    box = max(1, round(image_size * 20 / 28))
    h, w = x.shape
    scale = box / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    patch = np.asarray(
        Image.fromarray(x, mode="F").resize((new_w, new_h), Image.Resampling.LANCZOS), dtype=np.float32
    )
    patch = np.clip(patch, 0.0, None)
    if patch.max() > 0:
        patch = np.clip(patch / patch.max(), 0.0, 1.0)  # thin strokes shrink to grey; restore full ink
    # 5. paste with the centre of mass at the centre of the field.
    total = float(patch.sum())
    ys, xs = np.indices(patch.shape)
    cy = float((ys * patch).sum() / total) if total > 0 else (new_h - 1) / 2
    cx = float((xs * patch).sum() / total) if total > 0 else (new_w - 1) / 2
    top_y = int(round((image_size - 1) / 2 - cy))
    left_x = int(round((image_size - 1) / 2 - cx))
    # Clip to the field (a lopsided digit's box may not fit once centred by mass).
    top_y = min(max(top_y, 0), image_size - new_h)
    left_x = min(max(left_x, 0), image_size - new_w)
    out[top_y : top_y + new_h, left_x : left_x + new_w] = patch
    return out


def preprocess_image(img: Image.Image, image_size: int = 28) -> np.ndarray:
    """A PIL image -> MNIST-like float32 [image_size, image_size] in [0, 1] (white digit on black)."""
    return preprocess_array(to_grayscale(img), image_size)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float32 logits [N, K], in float32."""
    import torch

    return torch.softmax(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)), dim=1).numpy()


def quantize(x: np.ndarray) -> np.ndarray:
    """Round to 8-bit levels, as the training images are: keeps predictions identical to `evaluate`."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0


# --------------------------------------------------------------------------- inputs


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files as given, folders expanded to their image files (sorted, non-recursive, no hidden files).

    Raises:
        UsageError: an empty name (Path("") is the current folder: an empty shell variable must
            not predict every image there).
    """
    paths: list[str] = []
    for item in inputs:
        if not str(item):
            raise UsageError("an image or folder name is empty; pass a file or a folder (`.` for the current one)")
        p = Path(item)
        if p.is_dir():
            for child in sorted(p.iterdir()):
                if child.name.startswith(".") or not child.is_file():
                    continue
                if child.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(str(child))
        else:
            paths.append(str(item))
    return paths


@dataclass
class Batch:
    """Images ready for the model, from one input: float32 [n, H, W] or [n, C, H, W] in [0, 1].

    `labels` (int64 [n]) when the input has them; `names` names each image for image files
    (their paths), else it is empty and `start` is the position of the first one in its input.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    names: list[str] = field(default_factory=list)
    start: int = 0


class ImageFiles:
    """Image files as one input of `mnistlab predict`: opened, preprocessed and batched lazily.

    A file that cannot be used is skipped, its message kept in `errors`.
    """

    kind = "images"
    has_labels = False
    note: str | None = None

    def __init__(self, paths: Sequence[str], image_size: int = 28, channels: int = 1) -> None:
        self.paths = list(paths)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.errors: list[str] = []

    @property
    def name(self) -> str:
        """How summaries name this input."""
        return f"{len(self.paths)} image files"

    def _read(self, path: str, photo: bool) -> np.ndarray:
        if self.channels == 3:
            # A colour run: as its training images were read (no digit preprocessing), uint8 [3, H, W].
            return read_image(path, 3, self.image_size)
        if photo:
            return quantize(preprocess_image(open_image(path), self.image_size))
        # Only grayscale and size (`--preprocess none`): the image is taken to be MNIST-like already, and its
        # uint8 pixels are normalised as an array's are.
        return read_grayscale(path, self.image_size)

    def batches(self, size: int, photo: bool = True) -> Iterator[Batch]:
        """Batches of up to `size` readable images (MNIST-style preprocessing unless `photo` is False;
        never for a colour run's images, which are read as its training folder was)."""
        arrays: list[np.ndarray] = []
        names: list[str] = []
        for path in self.paths:
            try:
                arrays.append(self._read(path, photo))
                names.append(path)
            except ImageError as exc:
                self.errors.append(str(exc))
            if len(arrays) >= size:
                yield Batch(np.stack(arrays), names=names)
                arrays, names = [], []
        if arrays:
            yield Batch(np.stack(arrays), names=names)


# --------------------------------------------------------------------------- the model


class Predictor:
    """A trained model ready for inference: weights, normalisation and class names from a checkpoint."""

    def __init__(
        self,
        model: Any,
        mean: Sequence[float],
        std: Sequence[float],
        classes: Sequence[str],
        *,
        in_channels: int = 1,
        image_size: int = 28,
        batch_size: int = 1000,
    ) -> None:
        import torch

        self.model = model.eval()
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        from mnistlab.data.loader import normalisation

        # uint8 pixels take the data loader's (scale, shift): the same float32 values training saw.
        self._scale, self._shift = (t.float() for t in normalisation(list(mean), list(std), len(list(mean))))
        self.classes = [str(c) for c in classes]
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        # Where the weights came from: set by from_checkpoint (`--dataset` and the metrics need them).
        self.source = "model"
        self.epoch: int | None = None
        self.config: dict[str, Any] = {}
        self.data_spec: dict[str, Any] = {}  # the checkpoint's "data": what the run was trained on
        self.channels_last = False
        self.tta = False  # test-time augmentation (`predict --tta`): see mnistlab.tta

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str = "checkpoint", code: Any = None,
                        model: Any = None) -> "Predictor":
        """Build from a loaded checkpoint dict (`code`: a usercode.ModelCode, for a model from a user's file;
        `model`: a fresh instance, for a run of a module object passed to mnistlab.fit)."""
        from mnistlab.training.checkpoint import build_model_from_checkpoint

        if (ckpt.get("config") or {}).get("task") == "text":
            raise CheckpointError(f"{source} is a text run's checkpoint; predict text with `mnistlab text predict` "
                                  "(in Python: mnistlab.text.predict_text(run, texts))")
        model = build_model_from_checkpoint(ckpt, source, code=code, model=model)
        data = ckpt["data"]
        predictor = cls(model, data["mean"], data["std"], data["classes"],
                        in_channels=int(data["in_channels"]), image_size=int(data["image_size"]))
        predictor.source, predictor.epoch = source, ckpt.get("epoch")
        predictor.config = dict(ckpt.get("config") or {})
        predictor.data_spec = dict(data)
        if predictor.config.get("channels_last"):
            # As the run trained and `evaluate` scores it: for convolutions on the CPU, 1.5-2x faster.
            import torch

            model.to(memory_format=torch.channels_last)
            predictor.channels_last = True
        return predictor

    @classmethod
    def from_run(cls, run: Any, checkpoint: str = "best", code: Any = None, model: Any = None) -> "Predictor":
        """Build from a run folder (or a Run, or a checkpoint .pt file directly)."""
        from mnistlab.training.checkpoint import load_checkpoint

        path = load_checkpoint_path(run, checkpoint)
        return cls.from_checkpoint(load_checkpoint(path), str(path), code, model)

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """Float32 logits [N, K] for images [N, H, W] or [N, C, H, W], in batches of `batch_size`.

        Float images hold values in [0, 1] (preprocessed); uint8 images are raw pixels 0..255 and
        are normalised exactly as training and `mnistlab evaluate` do it. Only the checkpoint's
        normalisation `(x - mean) / std` is applied; gray images go into every channel of a colour model.
        With `tta` set, the log of the softmax averaged over shifted copies (mnistlab.tta), as `evaluate --tta`.
        """
        import torch

        from mnistlab.tta import averaged_logits

        raw = images.dtype == np.uint8
        x_all = torch.from_numpy(np.ascontiguousarray(images) if raw else np.ascontiguousarray(images, np.float32))
        if x_all.ndim == 3:
            x_all = x_all.unsqueeze(1)
        if x_all.shape[1] != self.in_channels:
            x_all = x_all.expand(-1, self.in_channels, -1, -1)  # gray into every channel
        def forward(x: torch.Tensor) -> torch.Tensor:
            x = x.float().mul_(self._scale).add_(self._shift) if raw else (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x).float()

        outs = []
        with torch.inference_mode():
            for i in range(0, len(x_all), self.batch_size):
                x = x_all[i : i + self.batch_size]
                outs.append(averaged_logits(forward, x) if self.tta else forward(x))
        if not outs:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return torch.cat(outs).numpy()

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities [N, K] for preprocessed images [N, H, W] in [0, 1], in batches."""
        return probabilities(self.predict_logits(images))

    def to_prediction(self, path: str, probs: np.ndarray, top_k: int) -> Prediction:
        """The Prediction for one image's probabilities [K]: the top `top_k` classes, most likely first."""
        order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
        return Prediction(
            path=path,
            prediction=self.classes[int(order[0])],
            confidence=float(probs[order[0]]),
            top_k=[(self.classes[int(i)], float(probs[i])) for i in order],
            probabilities=[float(p) for p in probs],
        )

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One decoded picture as the model takes it: a colour run's uint8 [3, H, W] (read as its training
        folder was), else MNIST-style preprocessed float [H, W]."""
        if self.in_channels == 3:
            return square_image(image, 3, self.image_size)
        return quantize(preprocess_image(image, self.image_size))

    def predict_images(self, images: Sequence[Image.Image], names: Sequence[str] | None = None,
                       top_k: int = 3) -> list[Prediction]:
        """Predict PIL images in one batch (`prepare`d: MNIST-style for digit runs, resized for colour runs)."""
        names = list(names) if names is not None else [f"image{i}" for i in range(len(images))]
        arrays = np.stack([self.prepare(im) for im in images]) if images else \
            np.zeros((0, self.image_size, self.image_size), np.float32)
        probs = self.predict_arrays(arrays)
        return [self.to_prediction(n, p, top_k) for n, p in zip(names, probs)]

    def predict_paths(self, inputs: Iterable[str | Path], top_k: int = 3) -> tuple[list[Prediction], list[str]]:
        """Predict every image file among `inputs` (files and folders).

        Returns:
            (predictions in input order, one error message per file that could not be read).
        """
        files = ImageFiles(expand_inputs(inputs), self.image_size, self.in_channels)
        results = []
        for batch in files.batches(self.batch_size):
            probs = self.predict_arrays(batch.images)
            results += [self.to_prediction(name, p, top_k) for name, p in zip(batch.names, probs)]
        return results, files.errors


def load_checkpoint_path(run: Any, checkpoint: str = "best") -> Path:
    """The checkpoint file for RUN: a run folder's `checkpoints/<checkpoint>.pt`, or a .pt file itself."""
    from mnistlab.runfolder import check_run_folder, checkpoint_file

    folder = getattr(run, "path", None)  # a Run
    if folder is None:
        if Path(run).is_file():
            return Path(run)
        folder = check_run_folder(run)
    path = checkpoint_file(folder, checkpoint)
    if not path.is_file():
        raise MnistlabError(f"run {folder} has no {checkpoint} checkpoint ({path})")
    return path


def predict(run: Any, inputs: Iterable[str | Path], top_k: int = 3) -> tuple[list[Prediction], list[str]]:
    """Predict image files and folders with a run's best checkpoint (see `Predictor.predict_paths`)."""
    return Predictor.from_run(run).predict_paths(inputs, top_k=top_k)

