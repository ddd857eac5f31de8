"""Tests for chromaviz.sampling.threads: torch's threads sized to the free cores, and the user's override."""

from __future__ import annotations

import os

import pytest
import torch

import chromaviz
from chromaviz.sampling import threads
from chromaviz.sampling.threads import THREADS_VARIABLE, free_cores, use_free_cores, usable_cores


@pytest.fixture(autouse=True)
def torch_threads(monkeypatch):
    """Each test starts without the override and leaves torch's thread count as it found it."""
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_sets_torch_threads_within_the_usable_cores_and_prints_nothing(capfd):
    chosen = use_free_cores()
    assert 1 <= chosen <= usable_cores()
    assert torch.get_num_threads() == chosen
    assert capfd.readouterr() == ("", "")


def test_is_the_public_name():
    assert chromaviz.use_free_cores is use_free_cores


@pytest.mark.parametrize("load, expected", [(0.0, 4), (0.4, 4), (1.4, 3), (2.6, 1), (3.6, 1), (40.0, 1)])
def test_free_cores_are_the_usable_cores_less_the_load_average(monkeypatch, load, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0), raising=False)
    assert usable_cores() == 4
    assert free_cores() == expected


def test_a_system_without_load_average_counts_as_idle(monkeypatch):
    monkeypatch.delattr(os, "getloadavg", raising=False)
    assert free_cores() == usable_cores()


def test_threads_follow_the_load_and_never_exceed_torchs_own_choice(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(threads, "_ceiling", 3)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
    assert use_free_cores() == 3 == torch.get_num_threads()
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 0.0, 0.0), raising=False)
    assert use_free_cores() == 1 == torch.get_num_threads()


def test_an_explicit_omp_num_threads_is_kept(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1000.0, 0.0, 0.0), raising=False)
    torch.set_num_threads(usable_cores())
    monkeypatch.setenv(THREADS_VARIABLE, str(usable_cores()))
    assert use_free_cores() == usable_cores() == torch.get_num_threads()
