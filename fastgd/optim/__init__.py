"""Fused gradient-descent updates: optimizers, ParamBuffer, gradient clipping, schedules."""

from fastgd.optim import schedules
from fastgd.optim.buffer import ParamBuffer
from fastgd.optim.clip import clip_grad_norm, clip_grad_value
from fastgd.optim.groups import Groups
from fastgd.optim.optimizers import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Lion,
    NAdam,
    Optimizer,
    RAdam,
    RMSprop,
    StepInfo,
)

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Lion",
           "Groups", "Optimizer", "StepInfo", "OPTIMIZERS", "ParamBuffer", "clip_grad_norm",
           "clip_grad_value", "schedules"]
