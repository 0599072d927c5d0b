"""Every status and kind a row can hold, in one place (like arq's ``constants.py``)."""

from __future__ import annotations

# tasks.status (the public task object shows these words too)
QUEUED, IN_PROGRESS, SUCCESS, FAILURE = "QUEUED", "IN_PROGRESS", "SUCCESS", "FAILURE"
TASK_ACTIVE = (QUEUED, IN_PROGRESS)
TASK_TERMINAL = (SUCCESS, FAILURE)
TASK_MAY_CHARGE = (QUEUED, IN_PROGRESS, SUCCESS)
"""A task's hold is settled by the task itself, in the transaction of its terminal update; only a
task that has failed can no longer charge, so only its hold is the reaper's to release."""

# webhook_deliveries.status
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

# ledger.kind
TOPUP, HOLD, RELEASE, CHARGE = "topup", "hold", "release", "charge"
