"""The learning-rate schedule and the plan that fits a time budget."""

import math

import pytest

from pbn_cli.networks.recipe import TrainConfig
from pbn_cli.training.schedule import Schedule, plan_epochs


def test_warmup_then_cosine_over_the_planned_epochs():
    s = Schedule(TrainConfig(epochs=4, warmup=0.25, schedule="cosine"), steps_per_epoch=10)  # 40 steps, 10 of warm-up
    assert s.factor(0) == pytest.approx(0.1)
    assert s.factor(4) == pytest.approx(0.5)  # warming up, epoch 0 of the cosine
    assert s.factor(20) == pytest.approx(0.5)  # epoch 2 of 4: half-way down the cosine
    assert s.factor(39) == pytest.approx(0.5 * (1 + math.cos(3 * math.pi / 4)))
    s.planned_epochs = 2  # a shorter plan anneals sooner
    assert s.factor(19) == pytest.approx(0.5) and s.factor(9) == pytest.approx(1.0)


def test_cosine_steps_is_smooth_over_the_planned_steps():
    s = Schedule(TrainConfig(epochs=4, schedule="cosine-steps"), steps_per_epoch=10)
    assert s.factor(20) == pytest.approx(0.5)
    assert s.factor(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 40)))
    assert s.factor(39) < 0.01


def test_multistep_decays_by_epoch():
    s = Schedule(TrainConfig(schedule="multistep", milestones=[1, 3], gamma=0.1, epochs=5), steps_per_epoch=4)
    assert [s.factor(e * 4) for e in range(5)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])


def test_plan_fits_the_budget():
    assert plan_epochs(600, 0, 0, 100, 30) == 6
    assert plan_epochs(600, 350, 3, 100, 30) == 5  # 250 s left: two more of 100 s
    assert plan_epochs(600, 599, 3, 100, 30) == 3  # no room for another
    assert plan_epochs(60, 0, 0, 100, 30) == 1  # at least one epoch
    assert plan_epochs(10_000, 0, 0, 100, 30) == 30  # never beyond --epochs
