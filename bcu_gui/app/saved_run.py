"""Show a run from its folder in the run view's plots and result box: a reopened run, or one being watched.

A run folder holds per-epoch values only (``metrics.jsonl``), so the loss plot shows one point per epoch and
says so on its axis; a live run in the app puts the axis back to steps when it starts.
"""

from __future__ import annotations

import html

from ..common import pct
from ..core.run_library import RunCurves
from ..core.runfolder.reader import RunRecord

EPOCH_AXIS, STEP_AXIS = "epoch (per-epoch loss from the run folder)", "step"


def show_curves(run_view, curves: RunCurves, epochs: int, teacher_acc: float | None = None,
                teacher_asr: float | None = None, teacher_proxy: float | None = None) -> None:
    """Replace the run view's plots with ``curves`` (per epoch), the teacher's values as reference lines."""
    loss_plot, epochs_plot = run_view.loss_plot, run_view.epochs_plot
    epochs_plot.clear_reference()
    epochs_plot.start_run(max(epochs, len(curves), 1), teacher_acc, teacher_asr)
    if teacher_proxy is not None:
        epochs_plot.set_teacher_proxy(teacher_proxy)
    loss_plot.reset()
    loss_plot.plot.setLabel("bottom", EPOCH_AXIS)
    if not hasattr(run_view, "_live_smoothing"):  # one point per epoch: smoothing would only lag behind
        run_view._live_smoothing = loss_plot.smooth_slider.value()
    loss_plot.set_smoothing(0.0)
    add_rows(run_view, curves)


def add_rows(run_view, curves: RunCurves) -> None:
    """Append epochs to the plots (a watched run's new epochs)."""
    for i, epoch in enumerate(curves.epochs):
        loss = curves.curve("loss")[i]
        if loss is not None:
            run_view.loss_plot.add_step(epoch, loss)
        run_view.epochs_plot.add_epoch(epoch, curves.curve("acc")[i], curves.curve("asr")[i],
                                       curves.curve("agreement")[i], curves.curve("proxy_asr")[i])
    run_view.loss_plot.flush()
    run_view.epochs_plot.flush()


def restore_step_axis(run_view) -> None:
    """A live run in the app: steps on the loss plot's axis, and the user's smoothing back."""
    run_view.loss_plot.plot.setLabel("bottom", STEP_AXIS)
    if hasattr(run_view, "_live_smoothing"):
        run_view.loss_plot.set_smoothing(run_view.__dict__.pop("_live_smoothing"))


def record_html(record: RunRecord) -> str:
    """The result box for a run without a summary (unfinished, running, failed, damaged)."""
    lines = [f"<b>{html.escape(record.status.capitalize())}</b>: {html.escape(record.name)}, "
             f"{record.epochs_text} epochs, preset {html.escape(record.ratios_text or '?')}"]
    if record.acc is not None or record.asr is not None:
        lines.append(f"last epoch: ACC {pct(record.acc)}, ASR {pct(record.asr)}"
                     + (f", proxy ASR {pct(record.proxy_asr)}" if record.proxy_asr is not None else ""))
    if record.note:
        lines.append(html.escape(record.note))
    if record.resumable and record.status != "running":
        lines.append("It can be continued with File › Resume run…")
    lines.append(f"Run folder: {html.escape(str(record.path))}")
    return "<br>".join(lines)
