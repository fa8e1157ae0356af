"""The life of Worker Deployments and their versions: creating them before any worker polls,
drainage (DRAINING while pinned workflows run, DRAINED after), deleting versions and
deployments and what refuses it, version metadata, and the manager identity that guards
routing changes."""

from __future__ import annotations

import uuid

import pytest

from helpers import new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
from temporalio.api.enums.v1 import VersionDrainageStatus, WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    CreateWorkerDeploymentRequest,
    CreateWorkerDeploymentVersionRequest,
    DeleteWorkerDeploymentRequest,
    DeleteWorkerDeploymentVersionRequest,
    DescribeWorkerDeploymentVersionRequest,
    DescribeWorkerDeploymentVersionResponse,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentManagerRequest,
    UpdateWorkerDeploymentVersionMetadataRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from test_versioning import describe, set_current, versioned, visible

Status = WorkerDeploymentVersionStatus


@workflow.defn(name="PinnedWait", versioning_behavior=VersioningBehavior.PINNED)
class PinnedWait:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.done)
        return "done"

    @workflow.signal
    def finish(self) -> None:
        self.done = True


def proto(version: WorkerDeploymentVersion) -> VersionProto:
    return VersionProto(deployment_name=version.deployment_name, build_id=version.build_id)


async def describe_version(client: Client, version: WorkerDeploymentVersion) -> DescribeWorkerDeploymentVersionResponse:
    return await client.workflow_service.describe_worker_deployment_version(
        DescribeWorkerDeploymentVersionRequest(namespace=client.namespace, deployment_version=proto(version))
    )


async def version_status(client: Client, version: WorkerDeploymentVersion) -> int:
    return (await describe_version(client, version)).worker_deployment_version_info.status


async def delete_version(
    client: Client, version: WorkerDeploymentVersion, skip_drainage: bool = False, identity: str = ""
) -> None:
    await client.workflow_service.delete_worker_deployment_version(
        DeleteWorkerDeploymentVersionRequest(
            namespace=client.namespace,
            deployment_version=proto(version),
            skip_drainage=skip_drainage,
            identity=identity,
        )
    )


async def refused(call, status: RPCStatusCode, words: str) -> None:
    with pytest.raises(RPCError) as err:
        await call
    assert err.value.status == status, err.value.message
    assert words in err.value.message, err.value.message


async def test_a_version_drains_while_pinned_workflows_run_and_what_refuses_deletion(
    client: Client, task_queue: str
) -> None:
    name = new_id("deployment")
    v1, v2 = (WorkerDeploymentVersion(deployment_name=name, build_id=b) for b in ("1.0", "2.0"))
    async with (
        new_worker(client, task_queue, [PinnedWait], deployment_config=versioned(v1)),
        new_worker(client, task_queue, [PinnedWait], deployment_config=versioned(v2)),
    ):
        await visible(client, v2)
        await set_current(client, v1)
        assert await version_status(client, v2) == Status.WORKER_DEPLOYMENT_VERSION_STATUS_INACTIVE
        handle = await client.start_workflow("PinnedWait", id=new_id(), task_queue=task_queue)

        async def pinned() -> bool:
            info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
            return info.deployment_version.build_id == "1.0"

        await wait_for(pinned, timeout=20, what="the workflow to be pinned to 1.0")
        await set_current(client, v2)

        described = (await describe_version(client, v1)).worker_deployment_version_info
        assert described.status == Status.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINING
        assert described.drainage_info.status == VersionDrainageStatus.VERSION_DRAINAGE_STATUS_DRAINING
        assert described.drainage_info.HasField("last_changed_time")

        await refused(delete_version(client, v2), RPCStatusCode.FAILED_PRECONDITION, "current or ramping")
        await refused(delete_version(client, v1), RPCStatusCode.FAILED_PRECONDITION, "is draining")
        await refused(
            delete_version(client, v1, skip_drainage=True),
            RPCStatusCode.FAILED_PRECONDITION,
            "has active pollers",
        )
        await refused(
            client.workflow_service.delete_worker_deployment(
                DeleteWorkerDeploymentRequest(namespace=client.namespace, deployment_name=name)
            ),
            RPCStatusCode.FAILED_PRECONDITION,
            "deployment has versions",
        )

        # Still draining past the grace period while the pinned workflow runs.
        await wait_for(
            lambda: _after_grace(client, v1), timeout=10, what="the drainage grace period to pass"
        )
        assert await version_status(client, v1) == Status.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINING

        await handle.signal("finish")
        assert await handle.result() == "done"

        async def drained() -> bool:
            return await version_status(client, v1) == Status.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED

        await wait_for(drained, timeout=30, interval=0.5, what="1.0 to be drained")
        info = (await describe_version(client, v1)).worker_deployment_version_info
        assert info.drainage_info.status == VersionDrainageStatus.VERSION_DRAINAGE_STATUS_DRAINED
        summaries = {
            s.deployment_version.build_id: s for s in (await describe(client, name)).worker_deployment_info.version_summaries
        }
        assert summaries["1.0"].status == Status.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED
        assert summaries["1.0"].drainage_info.status == VersionDrainageStatus.VERSION_DRAINAGE_STATUS_DRAINED


async def _after_grace(client: Client, version: WorkerDeploymentVersion) -> bool:
    info = (await describe_version(client, version)).worker_deployment_version_info
    checked = info.drainage_info.last_checked_time.ToNanoseconds()
    deactivated = info.last_deactivation_time.ToNanoseconds()
    return checked - deactivated > 3_000_000_000


async def test_deployments_and_versions_created_before_workers_poll(client: Client) -> None:
    name = new_id("deployment")
    request_id = str(uuid.uuid4())
    create = CreateWorkerDeploymentRequest(
        namespace=client.namespace, deployment_name=name, identity="ops", request_id=request_id
    )
    await client.workflow_service.create_worker_deployment(create)
    # The same request again succeeds; another one for the same name does not.
    await client.workflow_service.create_worker_deployment(create)
    await refused(
        client.workflow_service.create_worker_deployment(
            CreateWorkerDeploymentRequest(namespace=client.namespace, deployment_name=name, identity="ops")
        ),
        RPCStatusCode.ALREADY_EXISTS,
        "already exists",
    )
    assert (await describe(client, name)).worker_deployment_info.name == name

    v1, v2 = (WorkerDeploymentVersion(deployment_name=name, build_id=b) for b in ("1.0", "2.0"))
    await client.workflow_service.create_worker_deployment_version(
        CreateWorkerDeploymentVersionRequest(namespace=client.namespace, deployment_version=proto(v1), identity="ops")
    )
    assert await version_status(client, v1) == Status.WORKER_DEPLOYMENT_VERSION_STATUS_CREATED
    await refused(
        client.workflow_service.create_worker_deployment_version(
            CreateWorkerDeploymentVersionRequest(
                namespace=client.namespace,
                deployment_version=VersionProto(deployment_name=new_id("none"), build_id="1.0"),
            )
        ),
        RPCStatusCode.NOT_FOUND,
        "no Worker Deployment found",
    )

    # A version no worker has polled becomes current only when the caller allows it.
    set_v2 = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace, deployment_name=name, build_id="2.0", identity="ops"
    )
    await refused(
        client.workflow_service.set_worker_deployment_current_version(set_v2),
        RPCStatusCode.NOT_FOUND,
        "build ID '2.0' not found",
    )
    set_v2.allow_no_pollers = True
    await client.workflow_service.set_worker_deployment_current_version(set_v2)
    assert await version_status(client, v2) == Status.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT

    # 1.0 takes over; 2.0, with no workflow pinned to it, drains once the grace period is over
    # and can then be deleted (it never had pollers).
    await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace, deployment_name=name, build_id="1.0", identity="ops"
        )
    )

    async def drained() -> bool:
        return await version_status(client, v2) == Status.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED

    await wait_for(drained, timeout=30, interval=0.5, what="2.0 to be drained")
    await delete_version(client, v2, identity="ops")
    builds = [s.deployment_version.build_id for s in (await describe(client, name)).worker_deployment_info.version_summaries]
    assert builds == ["1.0"]
    await refused(describe_version(client, v2), RPCStatusCode.NOT_FOUND, "not found")

    # Deleting a deployment that is not there succeeds, as in Temporal.
    await client.workflow_service.delete_worker_deployment(
        DeleteWorkerDeploymentRequest(namespace=client.namespace, deployment_name=new_id("none"))
    )


async def test_version_metadata_and_the_manager_identity(client: Client, task_queue: str) -> None:
    name = new_id("deployment")
    v1 = WorkerDeploymentVersion(deployment_name=name, build_id="1.0")
    async with new_worker(client, task_queue, [PinnedWait], deployment_config=versioned(v1)):
        await visible(client, v1)
        json = {"encoding": b"json/plain"}
        updated = await client.workflow_service.update_worker_deployment_version_metadata(
            UpdateWorkerDeploymentVersionMetadataRequest(
                namespace=client.namespace,
                deployment_version=proto(v1),
                upsert_entries={
                    "owner": Payload(metadata=json, data=b'"team-a"'),
                    "ticket": Payload(metadata=json, data=b"42"),
                },
            )
        )
        assert set(updated.metadata.entries) == {"owner", "ticket"}
        updated = await client.workflow_service.update_worker_deployment_version_metadata(
            UpdateWorkerDeploymentVersionMetadataRequest(
                namespace=client.namespace, deployment_version=proto(v1), remove_entries=["ticket", "absent"]
            )
        )
        assert set(updated.metadata.entries) == {"owner"}
        info = (await describe_version(client, v1)).worker_deployment_version_info
        assert info.metadata.entries["owner"].data == b'"team-a"'

        manager = SetWorkerDeploymentManagerRequest(
            namespace=client.namespace, deployment_name=name, manager_identity="deployer"
        )
        await refused(
            client.workflow_service.set_worker_deployment_manager(manager),
            RPCStatusCode.INVALID_ARGUMENT,
            "Identity is required",
        )
        manager.identity = "deployer"
        managed = await client.workflow_service.set_worker_deployment_manager(manager)
        assert (await describe(client, name)).worker_deployment_info.manager_identity == "deployer"

        # Only the manager changes the routing now.
        await refused(
            client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace, deployment_name=name, build_id="1.0", identity="someone-else"
                )
            ),
            RPCStatusCode.FAILED_PRECONDITION,
            "ManagerIdentity 'deployer' is set and does not match user identity 'someone-else'",
        )
        await client.workflow_service.set_worker_deployment_current_version(
            SetWorkerDeploymentCurrentVersionRequest(
                namespace=client.namespace,
                deployment_name=name,
                build_id="1.0",
                identity="deployer",
                conflict_token=managed.conflict_token,
            )
        )
        released = await client.workflow_service.set_worker_deployment_manager(
            SetWorkerDeploymentManagerRequest(
                namespace=client.namespace, deployment_name=name, manager_identity="", identity="deployer"
            )
        )
        assert released.previous_manager_identity == "deployer"
        assert (await describe(client, name)).worker_deployment_info.manager_identity == ""
