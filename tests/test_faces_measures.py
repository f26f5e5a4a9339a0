"""Face recognition's measures on hand-made cases: the margin losses, the threshold and its
ten folds, and how pairs are drawn person by person."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.tasks.embed.margin import MarginHead
from cnnkit.tasks.embed.pairs import (
    best_threshold,
    sample_pairs,
    ten_fold_accuracy,
)


# ---- margins and measures ------------------------------------------------------------------
def test_arcface_adds_the_angle_to_the_true_identity_only():
    head = MarginHead(2, 3, "arcface", margin=0.5, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    theta = 0.3
    emb = torch.tensor([[math.cos(theta), math.sin(theta)]])
    logits = head(emb, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(theta + 0.5), abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(10 * math.sin(theta), abs=1e-5)  # cos(90 - t)
    assert logits[0, 2].item() == pytest.approx(-10 * math.cos(theta), abs=1e-5)


def test_cosface_subtracts_the_margin_from_the_true_cosine():
    head = MarginHead(2, 2, "cosface", margin=0.35, scale=30.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor([[0.6, 0.8]])
    logits = head(emb, torch.tensor([1]))
    assert logits[0, 1].item() == pytest.approx(30 * (0.8 - 0.35), abs=1e-5)
    assert logits[0, 0].item() == pytest.approx(30 * 0.6, abs=1e-5)


def test_arcface_keeps_penalising_beyond_pi_minus_the_margin():
    """Past pi - m, cos(theta + m) would rise again: the logit must keep falling."""
    head = MarginHead(2, 1, "arcface", margin=0.5, scale=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0]]))
    angles = torch.linspace(2.4, 3.1, 8)
    emb = torch.stack([angles.cos(), angles.sin()], 1)
    logits = head(emb, torch.zeros(8, dtype=torch.long))[:, 0]
    assert bool((logits[1:] < logits[:-1]).all()), logits


def test_the_best_threshold_separates_a_hand_made_case():
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    same = np.array([False, False, True, False, True, True])
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == pytest.approx(5 / 6)
    assert 0.2 < threshold < 0.35 or 0.4 < threshold < 0.8
    assert best_threshold(np.array([0.1, 0.9]), np.array([False, True])) == (0.5, 1.0)


def test_ten_folds_score_each_fold_at_the_others_threshold():
    rng = np.random.default_rng(0)
    same = np.arange(200) < 100
    scores = np.where(same, 0.8, 0.2) + rng.normal(0, 0.01, 200)
    assert ten_fold_accuracy(scores, same) == (1.0, 0.0)
    flipped = ten_fold_accuracy(-scores, same)[0]  # no threshold on "higher = same" works
    assert flipped <= 0.55


def test_pairs_are_drawn_person_by_person():
    labels = np.array([0] * 500 + [1] * 10 + [2] * 2 + [3])
    pairs = sample_pairs(labels, 600, seed=1)
    assert len(pairs) == 600 and pairs.same.sum() == 300
    assert (labels[pairs.first] == labels[pairs.second]).tolist() == pairs.same.tolist()
    assert (pairs.first != pairs.second).all()
    drawn = {(min(a, b), max(a, b)) for a, b in zip(pairs.first, pairs.second, strict=True)}
    assert len(drawn) == 600  # no pair twice
    people = np.bincount(labels[pairs.first[pairs.same]], minlength=4)
    # person by person: the two-image person gives its one pair and the ten-image one nearly
    # all its 45, where drawing among all pairs would give them 500:10:2 of 124,795
    assert people[3] == 0 and people[2] == 1 and 40 <= people[1] <= 45
    again = sample_pairs(labels, 600, seed=1)
    assert (again.first == pairs.first).all() and (again.second == pairs.second).all()
    with pytest.raises(CnnkitError, match="two people"):
        sample_pairs(np.array([0, 1, 2]))


def test_a_person_with_very_many_pairs_is_drawn_from_without_repeats():
    """220 images (24,090 pairs, over 4 x 6,000): drawn at random, never listed, none twice,
    even as their count nears the line."""
    labels = np.array([0] * 220 + [p for p in range(1, 400) for _ in range(2)])
    pairs = sample_pairs(labels, 6000, seed=0)
    drawn = {(min(a, b), max(a, b)) for a, b in zip(pairs.first, pairs.second, strict=True)}
    assert len(drawn) == len(pairs) == 6000 and pairs.same.sum() == 3000
