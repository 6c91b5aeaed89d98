"""The action that starts a workflow, so that a job (a workflow's rule, or any one-off or
recurring job) can start one. Registered when the app is ready."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workers.actions import ActionContext, PermanentError, register

from .models import Workflow


class WorkflowStartPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str = Field(description="The name of the workflow to start.")
    input: dict[str, Any] = Field(
        default_factory=dict, description="The data the execution starts with."
    )

    @field_validator("workflow")
    @classmethod
    def _exists(cls, name: str) -> str:
        if not Workflow.objects.filter(name=name).exists():
            raise ValueError(f"no workflow is named {name!r}")
        return name


@register(
    "workflow_start",
    payload=WorkflowStartPayload,
    description="Starts an execution of a workflow (once per step: a redelivery or a "
    "takeover finds the execution it started).",
    has_side_effects=False,
)
def workflow_start(ctx: ActionContext, payload: WorkflowStartPayload) -> dict[str, Any]:
    from .services.executions import OverlapRefused, execution_start

    workflow = Workflow.objects.filter(name=payload.workflow).first()
    if workflow is None:
        raise PermanentError(f"no workflow is named {payload.workflow!r}")
    try:
        started = execution_start(
            workflow=workflow,
            input=payload.input,
            start_key=f"step-{ctx.step_id}",
            started_by_job_id=ctx.job_id,
        )
    except OverlapRefused as exc:
        return {"skipped": "; ".join(exc.messages)}
    execution = started.execution
    return {"execution": execution.pk, "created": started.created, "status": execution.status}
