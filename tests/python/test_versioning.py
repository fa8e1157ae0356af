"""Worker versioning with Worker Deployments: versioned workers register their version when they
poll; tasks go to the deployment's current (or ramping) version; PINNED workflows stay on their
version, AUTO_UPGRADE ones move to the new current version; overrides at start."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from helpers import new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.api.enums.v1 import VersioningBehavior as VersioningBehaviorProto
from temporalio.api.enums.v1 import WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentResponse,
    DescribeWorkerDeploymentVersionRequest,
    ListWorkerDeploymentsRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
    UpdateWorkflowExecutionOptionsRequest,
    UpdateWorkflowExecutionOptionsResponse,
)
from temporalio.api.common.v1 import Priority, WorkflowExecution
from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflow.v1 import VersioningOverride, WorkflowExecutionOptions
from google.protobuf.field_mask_pb2 import FieldMask
from temporalio.client import Client
from temporalio.common import PinnedVersioningOverride, VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig


class Waiting:
    """State shared by the Versioned workflows: they wait for `do_finish`."""

    def __init__(self) -> None:
        self.finish = False

    async def wait(self) -> None:
        await workflow.wait_condition(lambda: self.finish)


@workflow.defn(name="Versioned", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class V1Auto(Waiting):
    @workflow.run
    async def run(self) -> str:
        await self.wait()
        return "v1"

    @workflow.signal
    def do_finish(self) -> None:
        self.finish = True

    @workflow.query
    def state(self) -> str:
        return "v1"


@workflow.defn(name="Versioned", versioning_behavior=VersioningBehavior.PINNED)
class V2Pinned(Waiting):
    @workflow.run
    async def run(self) -> str:
        await self.wait()
        return "v2"

    @workflow.signal
    def do_finish(self) -> None:
        self.finish = True

    @workflow.query
    def state(self) -> str:
        return "v2"


@workflow.defn(name="Versioned", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class V3Auto(Waiting):
    @workflow.run
    async def run(self) -> str:
        await self.wait()
        return "v3"

    @workflow.signal
    def do_finish(self) -> None:
        self.finish = True

    @workflow.query
    def state(self) -> str:
        return "v3"


class Continuing:
    """Waits for `go` (carrying the continue-as-new behavior), then continues as new once."""

    def __init__(self) -> None:
        self.behavior: str | None = None

    async def continue_once(self, generation: int, version: str) -> str:
        if generation > 0:
            return version
        await workflow.wait_condition(lambda: self.behavior is not None)
        workflow.continue_as_new(
            arg=generation + 1,
            initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior[self.behavior or ""],
        )


@workflow.defn(name="Continuing", versioning_behavior=VersioningBehavior.PINNED)
class ContinuingV1(Continuing):
    @workflow.run
    async def run(self, generation: int) -> str:
        return await self.continue_once(generation, "v1")

    @workflow.signal
    def go(self, behavior: str) -> None:
        self.behavior = behavior


@workflow.defn(name="Continuing", versioning_behavior=VersioningBehavior.PINNED)
class ContinuingV2(Continuing):
    @workflow.run
    async def run(self, generation: int) -> str:
        return await self.continue_once(generation, "v2")

    @workflow.signal
    def go(self, behavior: str) -> None:
        self.behavior = behavior


@workflow.defn(name="Plain")
class Plain:
    @workflow.run
    async def run(self) -> str:
        return "plain"


def versioned(version: WorkerDeploymentVersion, **kwargs: Any) -> WorkerDeploymentConfig:
    return WorkerDeploymentConfig(version=version, use_worker_versioning=True, **kwargs)


async def describe(client: Client, name: str) -> DescribeWorkerDeploymentResponse:
    return await client.workflow_service.describe_worker_deployment(
        DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=name)
    )


async def visible(client: Client, version: WorkerDeploymentVersion) -> DescribeWorkerDeploymentResponse:
    """Waits until the version's pollers have registered it."""

    async def check() -> DescribeWorkerDeploymentResponse | None:
        try:
            described = await describe(client, version.deployment_name)
        except RPCError:
            return None
        versions = [s.deployment_version.build_id for s in described.worker_deployment_info.version_summaries]
        return described if version.build_id in versions else None

    return await wait_for(check, timeout=20, what=f"version {version.build_id} to be registered")


async def set_current(client: Client, version: WorkerDeploymentVersion) -> bytes:
    token = (await visible(client, version)).conflict_token
    response = await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace,
            deployment_name=version.deployment_name,
            build_id=version.build_id,
            conflict_token=token,
        )
    )
    return response.conflict_token


async def completed_behaviors(handle: Any) -> list[int]:
    history = await handle.fetch_history()
    return [
        e.workflow_task_completed_event_attributes.versioning_behavior
        for e in history.events
        if e.HasField("workflow_task_completed_event_attributes")
    ]


async def test_current_version_routes_new_and_auto_upgrade_workflows_and_pinned_ones_stay(
    client: Client, task_queue: str
) -> None:
    name = new_id("deployment")
    v1, v2, v3 = (WorkerDeploymentVersion(deployment_name=name, build_id=b) for b in ("1.0", "2.0", "3.0"))
    async with (
        new_worker(client, task_queue, [V1Auto], deployment_config=versioned(v1)),
        new_worker(client, task_queue, [V2Pinned], deployment_config=versioned(v2)),
        new_worker(client, task_queue, [V3Auto], deployment_config=versioned(v3)),
    ):
        await set_current(client, v1)
        wf1 = await client.start_workflow("Versioned", id=new_id(), task_queue=task_queue)
        assert await wf1.query("state") == "v1"

        await set_current(client, v2)
        wf2 = await client.start_workflow("Versioned", id=new_id(), task_queue=task_queue)
        assert await wf2.query("state") == "v2"

        await set_current(client, v3)
        wf3 = await client.start_workflow("Versioned", id=new_id(), task_queue=task_queue)
        assert await wf3.query("state") == "v3"

        for handle in (wf1, wf2, wf3):
            await handle.signal("do_finish")
        # wf1 (auto-upgrade) moved to the current version 3.0; wf2 is pinned to 2.0.
        assert await wf1.result() == "v3"
        assert await wf2.result() == "v2"
        assert await wf3.result() == "v3"

    assert VersioningBehaviorProto.VERSIONING_BEHAVIOR_PINNED in await completed_behaviors(wf2)
    info = (await wf2.describe()).raw_description.workflow_execution_info.versioning_info
    assert info.behavior == VersioningBehaviorProto.VERSIONING_BEHAVIOR_PINNED
    assert info.deployment_version.build_id == "2.0"
    assert info.deployment_version.deployment_name == name

    described = await describe(client, name)
    routing = described.worker_deployment_info.routing_config
    assert routing.current_deployment_version.build_id == "3.0"
    statuses = {
        s.deployment_version.build_id: s.status for s in described.worker_deployment_info.version_summaries
    }
    assert statuses["3.0"] == WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT
    version = await client.workflow_service.describe_worker_deployment_version(
        DescribeWorkerDeploymentVersionRequest(namespace=client.namespace, version=f"{name}.3.0")
    )
    assert task_queue in [q.name for q in version.version_task_queues]
    listed = await client.workflow_service.list_worker_deployments(
        ListWorkerDeploymentsRequest(namespace=client.namespace)
    )
    assert name in [d.name for d in listed.worker_deployments]


async def test_versioned_workers_get_no_tasks_until_a_version_is_current(client: Client, task_queue: str) -> None:
    v1 = WorkerDeploymentVersion(deployment_name=new_id("deployment"), build_id="1.0")
    async with new_worker(client, task_queue, [V1Auto], deployment_config=versioned(v1)):
        handle = await client.start_workflow("Versioned", id=new_id(), task_queue=task_queue)
        before = await visible(client, v1)
        assert before.worker_deployment_info.routing_config.current_version == "__unversioned__"
        # Its pollers poll, but nothing routes tasks to version 1.0 yet.
        history = await handle.fetch_history()
        assert len(history.events) == 2, history
        await set_current(client, v1)
        await handle.signal("do_finish")
        assert await handle.result() == "v1"


async def test_ramping_sends_a_share_of_new_workflows_to_the_ramping_version(
    client: Client, task_queue: str
) -> None:
    name = new_id("deployment")
    v1 = WorkerDeploymentVersion(deployment_name=name, build_id="1.0")
    v2 = WorkerDeploymentVersion(deployment_name=name, build_id="2.0")
    async with (
        new_worker(client, task_queue, [V1Auto], deployment_config=versioned(v1)),
        new_worker(client, task_queue, [V2Pinned], deployment_config=versioned(v2)),
    ):
        await visible(client, v2)
        token = await set_current(client, v1)

        async def ramp(percentage: float) -> None:
            nonlocal token
            response = await client.workflow_service.set_worker_deployment_ramping_version(
                SetWorkerDeploymentRampingVersionRequest(
                    namespace=client.namespace,
                    deployment_name=name,
                    build_id="2.0",
                    percentage=percentage,
                    conflict_token=token,
                )
            )
            token = response.conflict_token

        async def run_one() -> str:
            handle = await client.start_workflow("Versioned", id=new_id(), task_queue=task_queue)
            await handle.signal("do_finish")
            return await handle.result()

        await ramp(100)
        assert [await run_one() for _ in range(3)] == ["v2"] * 3
        await ramp(0)
        assert [await run_one() for _ in range(3)] == ["v1"] * 3
        await ramp(50)
        seen = {await run_one() for _ in range(20)}
        assert seen == {"v1", "v2"}
        routing = (await describe(client, name)).worker_deployment_info.routing_config
        assert routing.ramping_deployment_version.build_id == "2.0"
        assert routing.ramping_version_percentage == 50


async def test_a_pinned_override_at_start_is_recorded(client: Client, task_queue: str) -> None:
    v1 = WorkerDeploymentVersion(deployment_name=new_id("deployment"), build_id="1.0")
    async with new_worker(client, task_queue, [V1Auto], deployment_config=versioned(v1)):
        await set_current(client, v1)
        handle = await client.start_workflow(
            "Versioned", id=new_id(), task_queue=task_queue, versioning_override=PinnedVersioningOverride(v1)
        )
        await handle.signal("do_finish")
        assert await handle.result() == "v1"
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.versioning_override.HasField("pinned") or (
        started.versioning_override.behavior == VersioningBehaviorProto.VERSIONING_BEHAVIOR_PINNED
    )


async def test_a_default_behavior_and_an_unversioned_worker_with_a_build_id(client: Client, task_queue: str) -> None:
    v1 = WorkerDeploymentVersion(deployment_name=new_id("deployment"), build_id="1.0")
    async with new_worker(
        client,
        task_queue,
        [Plain],
        deployment_config=versioned(v1, default_versioning_behavior=VersioningBehavior.PINNED),
    ):
        await set_current(client, v1)
        handle = await client.start_workflow("Plain", id=new_id(), task_queue=task_queue)
        assert await handle.result() == "plain"
    assert VersioningBehaviorProto.VERSIONING_BEHAVIOR_PINNED in await completed_behaviors(handle)

    other_queue = f"tq-{uuid.uuid4()}"
    build = WorkerDeploymentVersion(deployment_name=new_id("deployment"), build_id="custom-1")
    async with new_worker(
        client, other_queue, [Plain], deployment_config=WorkerDeploymentConfig(version=build, use_worker_versioning=False)
    ):
        handle = await client.start_workflow("Plain", id=new_id(), task_queue=other_queue)
        assert await handle.result() == "plain"
    history = await handle.fetch_history()
    stamps = [
        e.workflow_task_completed_event_attributes.worker_version.build_id
        for e in history.events
        if e.HasField("workflow_task_completed_event_attributes")
    ]
    assert stamps == ["custom-1"]


async def test_a_pinned_run_continued_as_new_keeps_its_version_unless_told_to_upgrade(
    client: Client, task_queue: str
) -> None:
    name = new_id("deployment")
    v1 = WorkerDeploymentVersion(deployment_name=name, build_id="1.0")
    v2 = WorkerDeploymentVersion(deployment_name=name, build_id="2.0")
    async with (
        new_worker(client, task_queue, [ContinuingV1], deployment_config=versioned(v1)),
        new_worker(client, task_queue, [ContinuingV2], deployment_config=versioned(v2)),
    ):
        await visible(client, v2)
        await set_current(client, v1)
        kept = await client.start_workflow("Continuing", 0, id=new_id(), task_queue=task_queue)
        upgraded = await client.start_workflow("Continuing", 0, id=new_id(), task_queue=task_queue)

        async def on_v1() -> bool:
            info = [(await h.describe()).raw_description.workflow_execution_info for h in (kept, upgraded)]
            return all(i.versioning_info.deployment_version.build_id == "1.0" for i in info)

        await wait_for(on_v1, what="both runs to have completed a task on 1.0")
        await set_current(client, v2)
        await kept.signal("go", "UNSPECIFIED")
        await upgraded.signal("go", "AUTO_UPGRADE")
        assert await kept.result() == "v1"
        assert await upgraded.result() == "v2"


async def test_deployment_requests_temporal_refuses(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await describe(client, new_id("no-such-deployment"))
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def update_options(
    client: Client, workflow_id: str, paths: list[str], **options: Any
) -> UpdateWorkflowExecutionOptionsResponse:
    return await client.workflow_service.update_workflow_execution_options(
        UpdateWorkflowExecutionOptionsRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
            workflow_execution_options=WorkflowExecutionOptions(**options),
            update_mask=FieldMask(paths=paths),
            identity="operator",
        )
    )


def pin_to(version: WorkerDeploymentVersion) -> VersioningOverride:
    return VersioningOverride(
        pinned=VersioningOverride.PinnedOverride(
            behavior=VersioningOverride.PinnedOverrideBehavior.PINNED_OVERRIDE_BEHAVIOR_PINNED,
            version=VersionProto(deployment_name=version.deployment_name, build_id=version.build_id),
        )
    )


async def test_update_options_pins_a_running_workflow_and_unpinning_lets_it_upgrade(
    client: Client, task_queue: str, cli
) -> None:
    name = new_id("deployment")
    v1, v2 = (WorkerDeploymentVersion(deployment_name=name, build_id=b) for b in ("1.0", "2.0"))
    async with (
        new_worker(client, task_queue, [V1Auto], deployment_config=versioned(v1)),
        new_worker(client, task_queue, [V2Pinned], deployment_config=versioned(v2)),
    ):
        await visible(client, v2)
        await set_current(client, v1)
        moved = await client.start_workflow("Versioned", id=new_id(), task_queue=task_queue)
        back = await client.start_workflow("Versioned", id=new_id(), task_queue=task_queue)
        assert await moved.query("state") == "v1" and await back.query("state") == "v1"

        response = await update_options(
            client, moved.id, ["versioning_override"], versioning_override=pin_to(v2)
        )
        assert response.workflow_execution_options.versioning_override.pinned.version.build_id == "2.0"
        info = (await moved.describe()).raw_description.workflow_execution_info.versioning_info
        assert info.versioning_override.pinned.version.build_id == "2.0"
        # The same request again changes nothing and writes nothing.
        await update_options(client, moved.id, ["versioning_override"], versioning_override=pin_to(v2))

        # Pinned, then unpinned by the temporal CLI: it stays with the current version 1.0.
        await cli.run(
            "workflow", "update-options", "--workflow-id", back.id,
            "--versioning-override-behavior", "pinned",
            "--versioning-override-deployment-name", name,
            "--versioning-override-build-id", "2.0",
        )
        await cli.run(
            "workflow", "update-options", "--workflow-id", back.id,
            "--versioning-override-behavior", "unspecified",
        )
        info = (await back.describe()).raw_description.workflow_execution_info.versioning_info
        assert not info.HasField("versioning_override")

        for handle in (moved, back):
            await handle.signal("do_finish")
        assert await moved.result() == "v2"
        assert await back.result() == "v1"

    async def listed(query: str) -> set[str] | None:
        found = {w.id async for w in client.list_workflows(query)}
        return found if {moved.id, back.id} & found else None

    on_v2 = await wait_for(
        lambda: listed(f"TemporalWorkerDeploymentVersion = '{name}:2.0' AND TaskQueue = '{task_queue}'"),
        timeout=20, what="the workflow pinned to 2.0 to be listed",
    )
    assert on_v2 == {moved.id}
    pinned_ones = await wait_for(
        lambda: listed(
            f"TemporalWorkflowVersioningBehavior = 'Pinned' AND TaskQueue = '{task_queue}'"
        ),
        timeout=20, what="the pinned workflow to be listed",
    )
    assert pinned_ones == {moved.id}
    in_deployment = await wait_for(
        lambda: listed(f"TemporalWorkerDeployment = '{name}'"), timeout=20, what="the deployment's workflows"
    )
    assert in_deployment == {moved.id, back.id}

    history = await moved.fetch_history()
    updated = [
        e for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED
    ]
    assert len(updated) == 1, [e.event_type for e in history.events]
    attributes = updated[0].workflow_execution_options_updated_event_attributes
    assert attributes.identity == "operator"
    assert attributes.versioning_override.pinned.version.build_id == "2.0"
    assert updated[0].worker_may_ignore
    back_events = (await back.fetch_history()).events
    unset = [
        e.workflow_execution_options_updated_event_attributes
        for e in back_events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED
    ]
    assert [u.unset_versioning_override for u in unset] == [False, True]


async def test_update_options_sets_priority_fields(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow("Plain", id=new_id(), task_queue=task_queue)
    response = await update_options(
        client, handle.id, ["priority.fairness_key"], priority=Priority(priority_key=3, fairness_key="tenant-a")
    )
    assert response.workflow_execution_options.priority.fairness_key == "tenant-a"
    assert response.workflow_execution_options.priority.priority_key == 0
    response = await update_options(client, handle.id, ["priority"], priority=Priority(priority_key=3))
    assert response.workflow_execution_options.priority.priority_key == 3
    assert response.workflow_execution_options.priority.fairness_key == ""
    described = await handle.describe()
    assert described.raw_description.workflow_execution_info.priority.priority_key == 3
    await handle.terminate()


async def test_update_options_requests_temporal_refuses(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow("Plain", id=new_id(), task_queue=task_queue)

    async def refused(code: RPCStatusCode, paths: list[str] | None, **options: Any) -> str:
        request = UpdateWorkflowExecutionOptionsRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=handle.id),
            workflow_execution_options=WorkflowExecutionOptions(**options),
            identity="operator",
        )
        if paths is not None:
            request.update_mask.CopyFrom(FieldMask(paths=paths))
        with pytest.raises(RPCError) as error:
            await client.workflow_service.update_workflow_execution_options(request)
        assert error.value.status == code, error.value.message
        return error.value.message

    assert "UpdateMask is required" in await refused(RPCStatusCode.INVALID_ARGUMENT, None)
    assert "invalid path" in await refused(RPCStatusCode.INVALID_ARGUMENT, ["memo"])
    assert "must be updated together" in await refused(
        RPCStatusCode.INVALID_ARGUMENT, ["versioning_override.behavior"]
    )
    unknown = WorkerDeploymentVersion(deployment_name=new_id("deployment"), build_id="9.9")
    assert "is not present in task queue" in await refused(
        RPCStatusCode.FAILED_PRECONDITION, ["versioning_override"], versioning_override=pin_to(unknown)
    )
    not_pinned = VersioningOverride(
        pinned=VersioningOverride.PinnedOverride(
            behavior=VersioningOverride.PinnedOverrideBehavior.PINNED_OVERRIDE_BEHAVIOR_PINNED
        )
    )
    assert "not yet pinned to any version" in await refused(
        RPCStatusCode.FAILED_PRECONDITION, ["versioning_override"], versioning_override=not_pinned
    )
    await handle.terminate()
    assert "already completed" in await refused(
        RPCStatusCode.NOT_FOUND, ["versioning_override"], versioning_override=VersioningOverride(auto_upgrade=True)
    )


class ParentOf:
    """Waits for `go`, then runs a "Child" workflow on its own task queue and returns its result."""

    def __init__(self) -> None:
        self.go_ = False

    async def run_child(self) -> str:
        await workflow.wait_condition(lambda: self.go_)
        return await workflow.execute_child_workflow("Child", id=f"{workflow.info().workflow_id}-child")


@workflow.defn(name="Parent", versioning_behavior=VersioningBehavior.PINNED)
class ParentV1(ParentOf):
    @workflow.run
    async def run(self) -> str:
        return await self.run_child()

    @workflow.signal
    def go(self) -> None:
        self.go_ = True


@workflow.defn(name="Parent", versioning_behavior=VersioningBehavior.PINNED)
class ParentV2(ParentOf):
    @workflow.run
    async def run(self) -> str:
        return await self.run_child()

    @workflow.signal
    def go(self) -> None:
        self.go_ = True


@workflow.defn(name="Child", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class ChildV1:
    @workflow.run
    async def run(self) -> str:
        return "child v1"


@workflow.defn(name="Child", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class ChildV2:
    @workflow.run
    async def run(self) -> str:
        return "child v2"


async def test_a_child_of_a_pinned_parent_inherits_its_version(client: Client, task_queue: str) -> None:
    name = new_id("deployment")
    v1, v2 = (WorkerDeploymentVersion(deployment_name=name, build_id=b) for b in ("1.0", "2.0"))
    async with (
        new_worker(client, task_queue, [ParentV1, ChildV1], deployment_config=versioned(v1)),
        new_worker(client, task_queue, [ParentV2, ChildV2], deployment_config=versioned(v2)),
    ):
        await visible(client, v2)
        await set_current(client, v1)
        parent = await client.start_workflow("Parent", id=new_id(), task_queue=task_queue)
        await wait_for(
            lambda: completed_behaviors(parent), timeout=20, what="the parent's first workflow task"
        )
        # The deployment moves on to 2.0; the pinned parent's child still starts on 1.0.
        await set_current(client, v2)
        await parent.signal("go")
        assert await parent.result() == "child v1"
    child = client.get_workflow_handle(f"{parent.id}-child")
    started = (await child.fetch_history()).events[0].workflow_execution_started_event_attributes
    assert started.inherited_pinned_version.build_id == "1.0"
    info = (await child.describe()).raw_description.workflow_execution_info.versioning_info
    assert info.deployment_version.build_id == "1.0"
