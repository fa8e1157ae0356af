"""Namespaces through the WorkflowService and OperatorService, and the cluster info calls."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from helpers import new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.api.enums.v1 import IndexedValueType, NamespaceState
from temporalio.api.namespace.v1 import UpdateNamespaceInfo
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    DeleteNamespaceRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    GetClusterInfoRequest,
    GetSystemInfoRequest,
    ListNamespacesRequest,
    RegisterNamespaceRequest,
    UpdateNamespaceRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

DAY = Duration(seconds=86400)


@workflow.defn
class Hello:
    @workflow.run
    async def run(self) -> str:
        return f"hello from {workflow.info().namespace}"


async def register(client: Client, **kw) -> str:
    name = new_id("ns")
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=DAY, **kw)
    )
    return name


async def describe(client: Client, name: str):
    return await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))


async def test_register_and_describe(client: Client) -> None:
    name = await register(client, description="keel test namespace", owner_email="keel@example.com", data={"k": "v"})
    desc = await describe(client, name)
    assert desc.namespace_info.name == name
    assert desc.namespace_info.state == NamespaceState.NAMESPACE_STATE_REGISTERED
    assert desc.namespace_info.description == "keel test namespace"
    assert desc.namespace_info.owner_email == "keel@example.com"
    assert dict(desc.namespace_info.data) == {"k": "v"}
    assert desc.namespace_info.id
    assert desc.config.workflow_execution_retention_ttl.ToTimedelta() == timedelta(days=1)
    # By id as well.
    by_id = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(id=desc.namespace_info.id))
    assert by_id.namespace_info.name == name


async def test_register_duplicate(client: Client) -> None:
    name = await register(client)
    with pytest.raises(RPCError) as err:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=DAY)
        )
    assert err.value.status == RPCStatusCode.ALREADY_EXISTS


async def test_register_without_retention_is_invalid(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await client.workflow_service.register_namespace(RegisterNamespaceRequest(namespace=new_id("ns")))
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT


async def test_list_namespaces_paged(client: Client) -> None:
    mine = {await register(client) for _ in range(3)}
    seen: list[str] = []
    token = b""
    pages = 0
    while True:
        resp = await client.workflow_service.list_namespaces(ListNamespacesRequest(page_size=2, next_page_token=token))
        pages += 1
        assert len(resp.namespaces) <= 2
        seen += [ns.namespace_info.name for ns in resp.namespaces]
        token = resp.next_page_token
        if not token:
            break
        assert pages < 1000
    assert "default" in seen
    assert mine <= set(seen)
    assert len(seen) == len(set(seen))
    assert pages >= 2


async def test_update_namespace(client: Client) -> None:
    name = await register(client, description="before")
    resp = await client.workflow_service.update_namespace(
        UpdateNamespaceRequest(
            namespace=name,
            update_info=UpdateNamespaceInfo(description="after", owner_email="owner@example.com", data={"team": "keel"}),
            config=NamespaceConfig(workflow_execution_retention_ttl=Duration(seconds=2 * 86400)),
        )
    )
    assert resp.namespace_info.description == "after"
    desc = await describe(client, name)
    assert desc.namespace_info.description == "after"
    assert desc.namespace_info.owner_email == "owner@example.com"
    assert desc.namespace_info.data["team"] == "keel"
    assert desc.config.workflow_execution_retention_ttl.ToTimedelta() == timedelta(days=2)


async def test_update_unknown_namespace(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await client.workflow_service.update_namespace(
            UpdateNamespaceRequest(namespace=new_id("nope"), update_info=UpdateNamespaceInfo(description="x"))
        )
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_describe_unknown_namespace(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await describe(client, new_id("nope"))
    assert err.value.status == RPCStatusCode.NOT_FOUND
    assert "not found" in err.value.message


async def test_workflow_in_new_namespace(client: Client, server, task_queue: str) -> None:
    name = await register(client)
    ns_client = await Client.connect(server.address, namespace=name)
    wf_id = new_id()
    async with new_worker(ns_client, task_queue, [Hello]):
        result = await ns_client.execute_workflow(Hello.run, id=wf_id, task_queue=task_queue)
    assert result == f"hello from {name}"
    # Workflow ids are per namespace: the same id in `default` is unknown.
    with pytest.raises(RPCError) as err:
        await client.get_workflow_handle(wf_id).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_operator_search_attributes(client: Client) -> None:
    name = await register(client)
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=name))
    assert "WorkflowId" in listed.system_attributes
    assert "ExecutionStatus" in listed.system_attributes
    assert "KeelTestAttr" not in listed.custom_attributes
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=name, search_attributes={"KeelTestAttr": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}
        )
    )
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=name))
    assert listed.custom_attributes["KeelTestAttr"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD


async def test_operator_delete_namespace(client: Client) -> None:
    name = await register(client)
    resp = await client.operator_service.delete_namespace(DeleteNamespaceRequest(namespace=name))
    assert resp.deleted_namespace

    async def gone() -> bool:
        try:
            await describe(client, name)
            return False
        except RPCError as err:
            assert err.status == RPCStatusCode.NOT_FOUND
            return True

    await wait_for(gone, timeout=15, what="deleted namespace to disappear")


async def test_system_and_cluster_info(client: Client) -> None:
    system = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    # The SDKs read these capabilities.
    assert system.capabilities.signal_and_query_header
    assert system.capabilities.internal_error_differentiation
    cluster = await client.workflow_service.get_cluster_info(GetClusterInfoRequest())
    assert cluster.server_version
    assert cluster.cluster_id
    assert cluster.history_shard_count >= 1
