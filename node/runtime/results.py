"""What a task leaves at a node besides its receipt: the result (sealed to the recipient's
own key) and a party's share of a trained model, each sealed under a context naming the task."""

from __future__ import annotations

import json
from typing import Any

from pcn.algorithms.base import ModelUnavailable
from pcn.crypto import sealed
from pcn.runtime.context import NodeContext


def result_context(task_id: int) -> bytes:
    return f"pcn/result/{task_id}".encode()


def model_context(task_id: int) -> bytes:
    return f"pcn/model/{task_id}".encode()


def load_sealed_model(ctx: NodeContext, task_id: int) -> dict[str, Any]:
    """This organisation's part of the model trained by `task_id`; ModelUnavailable when it
    stores none."""
    path = ctx.config.data_path / "models" / f"{task_id}.sealed"
    if not path.is_file():
        raise ModelUnavailable(f"this node stores no model of task {task_id}")
    return dict(json.loads(sealed.open_sealed(ctx.keys.x25519_private, path.read_bytes(), model_context(task_id))))
