"""Trainer callbacks for notebooks: a progress bar and one loss figure updated in place."""

from __future__ import annotations

import io
import time

from transformers import TrainerCallback

from . import plots
from .progress import HEADLESS, bar


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plots.plt.close(fig)
    return buf.getvalue()


class LiveLoss(TrainerCallback):
    """Shows train/eval loss as one figure that is redrawn in place (every ``every_s`` seconds in JupyterLab;
    only at the end under the runner, so the saved notebook holds exactly one final image)."""

    def __init__(self, every_s: float = 5.0, title: str = "LoRA SFT loss"):
        self.every_s = every_s
        self.title = title
        self.train: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []
        self._handle = None
        self._last = 0.0
        self._bar = None

    def _draw(self) -> None:
        from IPython.display import Image, display

        img = Image(data=_png(plots.loss_curve(self.train, self.evals, self.title)), format="png")
        if self._handle is None:
            self._handle = display(img, display_id=True)
        else:
            self._handle.update(img)

    def on_train_begin(self, args, state, control, **kwargs):
        self._bar = bar(total=state.max_steps, initial=state.global_step, desc="training", unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.update(state.global_step - self._bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.train.append((state.global_step, float(logs["loss"])))
            if self._bar is not None:
                self._bar.set_postfix(loss=f"{logs['loss']:.3f}")
        if "eval_loss" in logs:
            self.evals.append((state.global_step, float(logs["eval_loss"])))
        if not HEADLESS and time.monotonic() - self._last > self.every_s:
            self._last = time.monotonic()
            self._draw()

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.update(state.global_step - self._bar.n)
            self._bar.close()
        self._draw()
