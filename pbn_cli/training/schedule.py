"""The learning rate of every step, and a plan that fits the epochs into a time budget.

The factor of a step is a linear warm-up over the first ``warmup`` share of
the planned steps, times a cosine from 1 towards 0 over the planned epochs
(``cosine``) or steps (``cosine-steps``), or the reference's multistep decay. With ``--max-minutes`` the plan is the
number of epochs the budget holds, measured from the first steps and then
from each finished epoch, so a budgeted run ends annealed instead of being
cut in the middle of its schedule.
"""

from __future__ import annotations

import math
import time

from pbn_cli.networks.recipe import TrainConfig


class Schedule:
    def __init__(self, config: TrainConfig, steps_per_epoch: int, planned_epochs: int | None = None):
        self.config = config
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.planned_epochs = planned_epochs or config.epochs

    @property
    def total_steps(self) -> int:
        return self.planned_epochs * self.steps_per_epoch

    def factor(self, step: int) -> float:
        """The learning rate of global step ``step`` (0-based) as a share of the base rate."""
        c = self.config
        epoch = step // self.steps_per_epoch
        if c.schedule == "multistep":
            f = c.gamma ** sum(epoch >= m for m in c.milestones)
        else:  # cosine: by epoch (as quick was tuned); cosine-steps: smooth over the steps (cpu, default)
            done = step / self.total_steps if c.schedule == "cosine-steps" else epoch / self.planned_epochs
            f = 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        warm = c.warmup * self.total_steps
        if warm >= 1 and step < warm:
            f *= (step + 1) / warm
        return f

    def apply(self, optimizer, step: int) -> None:
        f = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * f


def plan_epochs(budget_s: float, elapsed_s: float, done: int, epoch_s: float, most: int) -> int:
    """Epochs in all: those ``done`` plus as many of ``epoch_s`` seconds as the rest of the budget holds.

    Never fewer than ``done`` (at least one), never more than ``most``.
    """
    more = math.floor(max(0.0, budget_s - elapsed_s) / max(epoch_s, 1e-9))
    return max(1, min(most, done + more), done)


class Planner:
    """Fits the schedule's planned epochs into a time budget; without one, the recipe's epochs stand.

    The first estimate comes from ``probe`` steps (after two of warm-up) plus
    the validation time (measured before training, or estimated from the
    step speed); each finished epoch then re-plans from its measured time.
    """

    def __init__(self, schedule: Schedule, max_minutes: float | None, most: int, first_step: int,
                 val_seconds: float | None, val_views: int, images_per_step: int, probe: int = 8, share=None):
        self.schedule, self.most, self.first_step, self.probe = schedule, most, first_step, probe
        self.share = share or (lambda value: value)  # under torchrun: every rank plans from rank 0's figure
        self.budget = max_minutes * 60 if max_minutes else None
        self.val_seconds, self.val_views, self.images_per_step = val_seconds, val_views, images_per_step
        self.started = time.monotonic()
        self.seen, self.t_probe, self.probed = 0, 0.0, self.budget is None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step_done(self, epoch: int, step: int) -> bool:
        """Count a step; True when this step made the first plan."""
        if self.probed:
            return False
        self.seen += 1
        if self.seen == 2:
            self.t_probe = time.monotonic()
        if self.seen < 2 + self.probe:
            return False
        self.probed = True
        per_step = (time.monotonic() - self.t_probe) / self.probe
        # validation embeds each view once, without gradients: about 3x a training image's speed
        val = self.val_seconds if self.val_seconds is not None else per_step * self.val_views / self.images_per_step / 3
        spe = self.schedule.steps_per_epoch
        rest = (spe - step) * per_step + val  # what this epoch still needs
        plan = plan_epochs(self.budget, self.elapsed() + rest, epoch + 1, spe * per_step + val, self.most)
        self.schedule.planned_epochs = self.share(plan)
        return True

    def epoch_done(self, done: int, seconds: float, elapsed: float) -> bool:
        """Re-plan from an epoch's measured time (both figures rank 0's); True when the plan changed."""
        if self.budget is None:
            return False
        before = self.schedule.planned_epochs
        self.probed = True
        self.schedule.planned_epochs = plan_epochs(self.budget, elapsed, done, seconds, self.most)
        return self.schedule.planned_epochs != before

    def bar_total(self) -> int:
        return self.schedule.total_steps - self.first_step
