"""Keras 3 on its torch backend, as its guides teach it: a Sequential model, compile, fit on arrays.

`model.fit(x, y, batch_size, epochs=1, shuffle=True)` on NumPy arrays, Keras's own
data path. Keras has no one-cycle schedule; the guides' nearest, CosineDecay with a
linear warm-up, gives the same shape (30% warm-up from lr / 25 to lr, cosine down to
lr / 25 / 1e4), differing only in the warm-up's curve. No metrics during fit (accuracy
is measured on the test set after it). `train_seconds` is the epoch (a Callback's
on_epoch_begin/end); `fit_seconds` is the whole fit call, Keras's set-up included.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported, as Keras's docs set it

import jobs  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402


def build(job: jobs.Job) -> keras.Model:
    if job.name == "dnn":
        layers: list[keras.layers.Layer] = [keras.Input(shape=(784,))]
        for width in jobs.DNN_HIDDEN:
            layers += [keras.layers.Dense(width), keras.layers.BatchNormalization(), keras.layers.ReLU(),
                       keras.layers.Dropout(jobs.DNN_DROPOUT)]
        return keras.Sequential([*layers, keras.layers.Dense(10)])
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(24, kernel_size=5), keras.layers.MaxPooling2D(2), keras.layers.ReLU(),
        keras.layers.Conv2D(32, kernel_size=3), keras.layers.MaxPooling2D(2), keras.layers.ReLU(),
        keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10),
    ])


def learning_rate(job: jobs.Job, steps: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    if not job.onecycle:
        return job.lr
    warmup = max(1, round(jobs.PCT_START * steps))
    start = job.lr / jobs.DIV_FACTOR
    return keras.optimizers.schedules.CosineDecay(
        start, decay_steps=max(1, steps - warmup), alpha=1 / jobs.DIV_FACTOR / jobs.FINAL_DIV_FACTOR,
        warmup_target=job.lr, warmup_steps=warmup)


class EpochTimer(keras.callbacks.Callback):
    """Seconds of the training epoch alone (device work included)."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device, self.start, self.seconds = device, 0.0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = jobs.clock(self.device)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds = jobs.clock(self.device) - self.start


def main() -> None:
    args = jobs.parse_args()
    job = jobs.JOBS[args.job]
    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = jobs.load(args)
    shape = (-1, 784) if job.name == "dnn" else (-1, 28, 28, 1)
    x_train, x_test = x_train.reshape(shape), x_test.reshape(shape)
    steps = -(-len(x_train) // job.batch_size)
    model = build(job)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(job, steps), beta_1=job.betas[0],
                                                  beta_2=job.betas[1]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = EpochTimer(args.device)
    start = jobs.clock(args.device)
    model.fit(x_train, y_train, batch_size=job.batch_size, epochs=1, shuffle=True, verbose=0, callbacks=[timer])
    fit_seconds = jobs.clock(args.device) - start
    logits = model.predict(x_test, batch_size=jobs.EVAL_BATCH, verbose=0)
    jobs.emit("keras", keras.__version__, args, images=len(x_train), steps=steps, train_seconds=timer.seconds,
              fit_seconds=fit_seconds, accuracy=float(np.mean(np.argmax(logits, axis=1) == y_test)))


if __name__ == "__main__":
    main()
