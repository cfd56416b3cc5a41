"""Adversarial consistency: a label-free unlearning term the distillation step adds to its loss.

Why: at real scale (issue #24) a student distilled on clean unlabelled images re-learns the backdoor from the
teacher's soft outputs, even fully re-initialised, because nothing in clean images asks it *not* to map the
trigger to the target class. A backdoor is a universal shortcut: one small input change that sends most images
to one class. This term searches for such shortcuts in the *student* while it trains and tells the student to
ignore them, in the spirit of I-BAU / SAU, but without labels: the target is the teacher's answer on the
*clean* image (the teacher's answer on clean images is right; only its answer on triggered images is wrong).

Each step the Distiller calls ``AdversarialConsistency.loss``:

1. the batch in pixel space (0..1, after crop / flip) is perturbed by universal perturbations that persist
   across steps: one ``d`` in the ``untargeted`` form; in the ``targeted`` form one ``d_c`` per class, the
   batch dealt out among the classes (image ``i`` gets ``d_c`` with ``c = (i + step) mod K``), so that every
   class's perturbation takes an ascent step every optimiser step;
2. the student sees ``x + d`` in the same forward pass as the clean batch (one concatenated batch, so batch
   norms see both); the term is ``KL(p_teacher(x) || p_student(x + d))`` at temperature 1;
3. ``d`` then takes one signed-gradient ascent step, projected to the L_inf ball ``eps``: in the
   ``untargeted`` form on the term itself (its gradient comes from the step's own backward pass, at no extra
   cost), in the ``targeted`` form on the mean ``log p_student(c | x + d_c)`` over the images that got ``d_c``
   (one extra backward to the input), which looks for the shortcut to class ``c`` directly.

The ``focused`` form searches like ``targeted`` but weighs each class's images by how much that class's
perturbation stands out: ``w_c = max(0, s_c - median(s)) / (1 - median(s))``, where ``s_c`` is a moving
average of the share of images (not already in class ``c`` by the teacher) that ``d_c`` sends to ``c`` in the
student. A backdoor is a shortcut far easier than any natural one, so at first one class carries the term
(its images weighted ``K / max(1, sum w)``); once the shortcut is gone no class stands out and the term fades
by itself, which spares the accuracy that forcing invariance to every class's natural perturbation costs.

The ``top`` form (an experiment, issue #24) is stricter: only the class whose success stands highest carries
the term, weighted by its lead over the runner-up, ``w = (s_top - s_second) / (1 - s_second)``. At budget 0.2
several natural classes reach 84-100% on real-scale teachers, so under ``focused`` every class above the
median is pushed to robustness, and that robustness is what costs the accuracy.

Every ``restart_every`` epochs the perturbations restart from random points of the ball, so the search does
not settle on one local optimum. Under several processes (DDP) each rank keeps its own perturbations, updated
from its own shard (rank-local; the student's gradients are synchronised as usual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.nn import functional as F

MODES = ("untargeted", "targeted", "focused", "top")
SUCCESS_DECAY = 0.9  # per step: the moving average of each class perturbation's success
DEFAULT_EPS = 0.2  # L_inf budget in pixel units (0..1)
DEFAULT_STEP = 0.25  # ascent step as a fraction of eps
DEFAULT_RESTART = 10  # epochs between random restarts of the perturbations


@dataclass(frozen=True)
class AdversarialSettings:
    """What the term does; ``weight`` 0 turns it off (the step is then exactly the plain distillation step)."""

    weight: float = 1.0
    eps: float = DEFAULT_EPS
    mode: str = "focused"
    step: float = DEFAULT_STEP
    restart_every: int | None = DEFAULT_RESTART
    until: float = 1.0  # the fraction of the epochs that carry the term; plain distillation after (ACC recovers)

    def validate(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"the adversarial weight must not be negative, got {self.weight}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"the perturbation budget must lie in (0, 1], got {self.eps}")
        if self.mode not in MODES:
            raise ValueError(f"unknown adversarial mode '{self.mode}': use {', '.join(MODES)}")
        if not 0 < self.step <= 1:
            raise ValueError(f"the ascent step must lie in (0, 1] (a fraction of the budget), got {self.step}")
        if not 0 < self.until <= 1:
            raise ValueError(f"the term's share of the epochs must lie in (0, 1], got {self.until}")
        if self.restart_every is not None and self.restart_every < 1:
            raise ValueError(f"restarts must be at least 1 epoch apart, got {self.restart_every}")


def describe(settings: AdversarialSettings, preset: str, from_preset: bool) -> str:
    """One line for the run's log: whether the student unlearns shortcuts, and with what."""
    if settings.weight <= 0:
        return ("unlearning term off: plain distillation (the paper's method"
                + ("" if preset == "paper" else f" with the {preset} ratios") + ")")
    why = f"the {preset} preset's" if from_preset else "set"
    span = "" if settings.until >= 1 else f", for the first {settings.until:.0%} of the epochs"
    return (f"unlearning shortcuts ({why}): adversarial consistency, {settings.mode}, weight {settings.weight:g}, "
            f"budget {settings.eps:g}{span}; each step runs the student on twice the images")


class AdversarialConsistency:
    """Universal perturbation(s) that persist across steps, and the consistency term they give."""

    def __init__(self, settings: AdversarialSettings, num_classes: int, shape: tuple[int, int, int],
                 device: torch.device, seed: int) -> None:
        settings.validate()
        self.settings = settings
        self.num_classes = num_classes
        self.gen = torch.Generator(device="cpu").manual_seed(seed + 7919)
        count = 1 if settings.mode == "untargeted" else num_classes
        self.delta = torch.zeros((count, *shape), device=device)
        self.success = torch.zeros(count, device=device)  # focused: each perturbation's moving success rate
        self.turn = 0  # which perturbation the next step uses (targeted: its class)
        self.restarts = 0  # restarts done so far (the epoch of the last one is restarts * restart_every)
        self.restart()

    def restart(self) -> None:
        """Every perturbation from a random point of the budget's ball (uniform in [-eps/2, eps/2])."""
        e = self.settings.eps
        noise = (torch.rand(self.delta.shape, generator=self.gen) - 0.5) * e
        self.delta.copy_(noise.to(self.delta.device))

    def active(self, epoch: int, epochs: int) -> bool:
        """Whether 0-based ``epoch`` of ``epochs`` carries the term (the first ``ceil(until * epochs)`` do)."""
        return epoch < math.ceil(self.settings.until * epochs - 1e-9)

    def maybe_restart(self, epoch: int) -> None:
        """At the start of 0-based ``epoch``: restart if ``restart_every`` epochs have passed since the last."""
        every = self.settings.restart_every
        if every is not None and epoch > 0 and epoch // every > self.restarts:
            self.restarts = epoch // every
            self.restart()

    def assignment(self, n: int) -> torch.Tensor:
        """Which perturbation each of ``n`` images gets this step (targeted: classes dealt out in turn)."""
        k = len(self.delta)
        return (torch.arange(n, device=self.delta.device) + self.turn) % k

    def perturb(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(``pixels + d`` clamped to 0..1, the perturbations as a leaf collecting gradients, the assignment)."""
        d = self.delta.clone().requires_grad_(True)
        which = self.assignment(len(pixels))
        return (pixels + d[which]).clamp(0.0, 1.0), d, which

    def term(self, adv_logits: torch.Tensor, teacher_logits: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """KL(p_teacher(x) || p_student(x + d)) at temperature 1, batch mean (each image weighted), fp32."""
        target = F.softmax(teacher_logits.float(), dim=1)
        per_image = F.kl_div(F.log_softmax(adv_logits.float(), dim=1), target, reduction="none").sum(dim=1)
        return (per_image if weights is None else per_image * weights).mean()

    @torch.no_grad()
    def class_weights(self, adv_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      which: torch.Tensor) -> torch.Tensor:
        """Focused form: update each class's success average from this step, return each image's weight."""
        k = len(self.delta)
        hit = (adv_logits.argmax(dim=1) == which).float()
        eligible = (teacher_logits.argmax(dim=1) != which).float()
        hits = torch.zeros(k, device=hit.device).index_add_(0, which, hit * eligible)
        counts = torch.zeros(k, device=hit.device).index_add_(0, which, eligible)
        seen = counts > 0
        rate = hits / counts.clamp_min(1)
        self.success.copy_(torch.where(seen, SUCCESS_DECAY * self.success + (1 - SUCCESS_DECAY) * rate,
                                       self.success))
        if self.settings.mode == "top":
            top2 = torch.topk(self.success, min(2, k)).values
            second = top2[-1]
            w = torch.zeros_like(self.success)
            w[self.success.argmax()] = (top2[0] - second).clamp_min(0) / (1 - second).clamp_min(1e-6)
            return (w * k)[which]
        median = self.success.median()
        w = (self.success - median).clamp_min(0) / (1 - median).clamp_min(1e-6)
        return (w * k / w.sum().clamp_min(1.0))[which]

    def targeted_gradient(self, adv_logits: torch.Tensor, d: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """The gradient, for each class ``c``, of the mean ``log p(c | x + d_c)`` over the images given ``d_c``."""
        counts = torch.bincount(which, minlength=len(d)).clamp_min(1).to(torch.float32)
        picked = F.log_softmax(adv_logits.float(), dim=1).gather(1, which[:, None]).squeeze(1)
        objective = (picked / counts[which]).sum()
        (grad,) = torch.autograd.grad(objective, d, retain_graph=True)
        return grad

    @torch.no_grad()
    def ascend(self, grad: torch.Tensor | None) -> None:
        """One signed-gradient ascent step of every perturbation, projected to [-eps, eps]; the next turn.

        A perturbation no image got this step has a zero gradient, and its sign leaves it where it was.
        """
        if grad is not None:
            e = self.settings.eps
            self.delta.add_(grad.sign(), alpha=self.settings.step * e).clamp_(-e, e)
        self.turn += 1

    def loss(self, model: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor,
             normalise: Callable[[torch.Tensor], torch.Tensor], teacher_logits: torch.Tensor,
             clean_loss: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, Callable[[], None]]:
        """The step's whole loss: ``clean_loss(student(x)) + weight * term``, and a callback for after backward.

        ``model`` runs once on the clean and perturbed batch together; ``normalise`` turns pixels (0..1) into
        the model's input. Call the returned callback after ``backward()``: it takes the ascent step.
        """
        adv, d, which = self.perturb(pixels)
        n = len(pixels)
        logits = model(normalise(torch.cat([pixels, adv])))
        clean_logits, adv_logits = logits[:n], logits[n:]
        weighted = self.settings.mode in ("focused", "top")  # the forms that weigh classes by their success
        weights = self.class_weights(adv_logits, teacher_logits, which) if weighted else None
        term = self.term(adv_logits, teacher_logits, weights)
        grad = self.targeted_gradient(adv_logits, d, which) if self.settings.mode != "untargeted" else None
        total = clean_loss(clean_logits) + self.settings.weight * term

        def after_backward() -> None:
            self.ascend(grad if grad is not None else d.grad)

        return total, after_backward

    # -- what a resume file saves (Distiller.tensors() names it "adversarial") -----------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"delta": self.delta.detach().cpu().clone(), "turn": self.turn, "restarts": self.restarts,
                "gen": self.gen.get_state(), "success": self.success.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.delta.copy_(state["delta"].to(self.delta.device))
        self.turn, self.restarts = int(state["turn"]), int(state["restarts"])
        self.gen.set_state(state["gen"])
        if "success" in state:  # resume files written before the focused form have none (all zero then)
            self.success.copy_(state["success"].to(self.success.device))
