"""Test-suite settings: one torch thread per worker (pytest -n 2 already uses both cores), and the
tests folder importable (toy envs)."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)
