// End-to-end checks of a Temporal server with the official TypeScript SDK: a worker (the SDK's
// Rust core) and a client (gRPC in Node). Usage: node checks.js HOST:PORT
// Prints one JSON object, check name -> "ok" or what failed; exits 1 if any failed.
const assert = require('assert');
const {
  Connection,
  Client,
  ScheduleOverlapPolicy,
  WithStartWorkflowOperation,
  WorkflowFailedError,
  WorkflowUpdateFailedError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
} = require('@temporalio/client');
const { Worker, NativeConnection, Runtime, DefaultLogger } = require('@temporalio/worker');
const activities = require('./activities');

const CHECKS = {
  async 'activity result'({ client, start }) {
    assert.strictEqual(await client.workflow.execute('hello', start('TS')), 'Hello, TS!');
  },
  async 'local activity'({ client, start }) {
    assert.strictEqual(await client.workflow.execute('local', start('local')), 'Hello, local!');
  },
  async 'activity retried until it succeeds'({ client, start }) {
    assert.strictEqual(await client.workflow.execute('retried', start()), 3);
  },
  async 'activity failure reaches the client'({ client, start }) {
    await assert.rejects(client.workflow.execute('failing', start()), (err) => {
      assert(err instanceof WorkflowFailedError, err);
      assert.strictEqual(err.cause.cause.type, 'MyError');
      assert.strictEqual(err.cause.cause.message, 'boom');
      return true;
    });
  },
  async 'heartbeating activity cancelled'({ client, start }) {
    const result = await client.workflow.execute('cancelsActivity', start());
    assert.match(result, /cancelled after \d+ heartbeats|activity ended with/);
  },
  async 'signals, queries and updates'({ client, start }) {
    const handle = await client.workflow.start('counter', start(10));
    await handle.signal('inc', 3);
    assert.strictEqual(await handle.query('count'), 3);
    assert.strictEqual(await handle.executeUpdate('add', { args: [4] }), 7);
    await assert.rejects(handle.executeUpdate('add', { args: [5000] }), WorkflowUpdateFailedError);
    await assert.rejects(handle.executeUpdate('add', { args: [-1] }), WorkflowUpdateFailedError);
    await assert.rejects(handle.query('nope'), /nope/);
    await handle.signal('inc', 3);
    assert.strictEqual(await handle.result(), 10);
    assert.strictEqual((await handle.describe()).status.name, 'COMPLETED');
  },
  async 'signal with start'({ client, start }) {
    const handle = await client.workflow.signalWithStart('counter', {
      ...start(2),
      signal: 'inc',
      signalArgs: [2],
    });
    assert.strictEqual(await handle.result(), 2);
  },
  async 'update with start'({ client, start }) {
    const operation = new WithStartWorkflowOperation('counter', {
      ...start(5),
      workflowIdConflictPolicy: 'USE_EXISTING',
    });
    assert.strictEqual(await client.workflow.executeUpdateWithStart('add', { args: [5], startWorkflowOperation: operation }), 5);
    assert.strictEqual(await (await operation.workflowHandle()).result(), 5);
  },
  async 'timers and condition timeouts'({ client, start }) {
    assert.deepStrictEqual(await client.workflow.execute('timers', start()), { order: ['fast', 'slow'], timedOut: true });
  },
  async 'child workflows'({ client, start }) {
    const options = start(2);
    assert.deepStrictEqual(await client.workflow.execute('parent', options), ['Hello, child0!', 'Hello, child1!']);
    const child = await client.workflow.getHandle(`${options.workflowId}-c1`).describe();
    assert.strictEqual(child.parentExecution.workflowId, options.workflowId);
  },
  async 'signal an external workflow'({ client, start }) {
    const target = await client.workflow.start('counter', start(5));
    await client.workflow.execute('signaller', start(target.workflowId));
    assert.strictEqual(await target.result(), 5);
  },
  async 'cancel'({ client, start }) {
    const handle = await client.workflow.start('sleeper', start());
    await new Promise((resolve) => setTimeout(resolve, 300));
    await handle.cancel();
    await assert.rejects(handle.result(), WorkflowFailedError);
    assert.strictEqual((await handle.describe()).status.name, 'CANCELLED');
  },
  async 'terminate'({ client, start }) {
    const handle = await client.workflow.start('sleeper', start());
    await handle.terminate('bye');
    assert.strictEqual((await handle.describe()).status.name, 'TERMINATED');
    await assert.rejects(handle.result(), WorkflowFailedError);
  },
  async 'continue as new'({ client, start }) {
    const options = start(0);
    assert.strictEqual(await client.workflow.execute('looper', options), 3);
    const described = await client.workflow.getHandle(options.workflowId).describe();
    assert.strictEqual(described.status.name, 'COMPLETED');
  },
  async 'patched'({ client, start }) {
    assert.strictEqual(await client.workflow.execute('patched', start()), 'new');
  },
  async 'memo and workflow info'({ client, start }) {
    const options = { ...start(), memo: { team: 'keel' } };
    const result = await client.workflow.execute('info', options);
    assert.deepStrictEqual(result.memo, { team: 'keel' });
    assert.strictEqual(result.workflowType, 'info');
    assert.strictEqual(result.attempt, 1);
    const described = await client.workflow.getHandle(options.workflowId).describe();
    assert.deepStrictEqual(described.memo, { team: 'keel' });
  },
  async 'workflow retry policy'({ client, start }) {
    const options = { ...start(), retry: { maximumAttempts: 5, initialInterval: '50ms' } };
    assert.strictEqual(await client.workflow.execute('retriedWorkflow', options), 3);
  },
  async 'search attributes upserted and listed'({ client, connection, start }) {
    const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace: 'default' });
    const wanted = { TsKeyword: 'INDEXED_VALUE_TYPE_KEYWORD', TsInt: 'INDEXED_VALUE_TYPE_INT' };
    const missing = Object.fromEntries(Object.entries(wanted).filter(([name]) => !(name in customAttributes)));
    if (Object.keys(missing).length > 0) {
      const { temporal } = require('@temporalio/proto');
      const types = temporal.api.enums.v1.IndexedValueType;
      await connection.operatorService.addSearchAttributes({
        namespace: 'default',
        searchAttributes: Object.fromEntries(Object.entries(missing).map(([name, type]) => [name, types[type]])),
      });
    }
    const options = start();
    const seen = await client.workflow.execute('upserts', options);
    assert.deepStrictEqual(seen.TsKeyword, ['from-ts']);
    assert.deepStrictEqual(seen.TsInt, [7]);
    const described = await client.workflow.getHandle(options.workflowId).describe();
    assert.deepStrictEqual(described.searchAttributes.TsKeyword, ['from-ts']);
    let listed = [];
    for (let i = 0; i < 50 && listed.length === 0; i++) {
      listed = [];
      for await (const execution of client.workflow.list({ query: `TsKeyword = 'from-ts' AND TsInt = 7 AND WorkflowId = '${options.workflowId}'` })) {
        listed.push(execution.workflowId);
      }
      if (listed.length === 0) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.deepStrictEqual(listed, [options.workflowId]);
  },
  async 'activity completed by the client'({ client, start }) {
    const handle = await client.workflow.start('completedLater', start());
    for (let i = 0; i < 100 && activities.pendingTokens.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const token = activities.pendingTokens.pop();
    assert(token, 'the activity never ran');
    const described = await handle.describe();
    assert.strictEqual(described.raw.pendingActivities.length, 1);
    await client.activity.complete(token, 'done later');
    assert.strictEqual(await handle.result(), 'done later');
  },
  async 'child cancelled from its parent'({ client, start }) {
    assert.match(await client.workflow.execute('cancelsChild', start()), /Cancel/);
  },
  async 'start delay'({ client, start }) {
    const handle = await client.workflow.start('hello', { ...start('later'), startDelay: '1s' });
    const described = await handle.describe();
    assert(described.executionTime.getTime() - described.startTime.getTime() >= 900, 'no delay');
    assert.strictEqual(await handle.result(), 'Hello, later!');
  },
  async 'duplicate start refused, unknown workflow not found'({ client, start }) {
    const options = start();
    await client.workflow.start('sleeper', options);
    await assert.rejects(client.workflow.start('sleeper', options), WorkflowExecutionAlreadyStartedError);
    await client.workflow.getHandle(options.workflowId).terminate();
    await assert.rejects(client.workflow.getHandle(`missing-${options.workflowId}`).describe(), WorkflowNotFoundError);
  },
  async 'history'({ client, start }) {
    const options = start('history');
    await client.workflow.execute('hello', options);
    const history = await client.workflow.getHandle(options.workflowId).fetchHistory();
    assert(history.events.length >= 11, `${history.events.length} events`);
  },
  async 'list and count'({ client, taskQueue }) {
    // Run after the others: every workflow so far ran on this task queue.
    const query = `TaskQueue = '${taskQueue}'`;
    let listed = 0;
    for await (const execution of client.workflow.list({ query })) {
      assert.strictEqual(execution.taskQueue, taskQueue);
      listed++;
    }
    assert(listed >= 15, `listed ${listed}`);
    assert.strictEqual((await client.workflow.count(query)).count, listed);
  },
  async 'schedules'({ client, start, taskQueue }) {
    const { workflowId } = start();
    const schedule = await client.schedule.create({
      scheduleId: `schedule-${workflowId}`,
      spec: { intervals: [{ every: '1h' }] },
      action: { type: 'startWorkflow', workflowType: 'hello', args: ['scheduled'], taskQueue },
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
    });
    await schedule.trigger();
    let described = await schedule.describe();
    for (let i = 0; i < 50 && described.info.recentActions.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      described = await schedule.describe();
    }
    assert.strictEqual(described.info.recentActions.length, 1);
    await schedule.pause('paused by the check');
    described = await schedule.describe();
    assert.strictEqual(described.state.paused, true);
    assert.strictEqual(described.state.note, 'paused by the check');
    await schedule.delete();
  },
};

async function main() {
  const address = process.argv[2];
  if (!address) throw new Error('usage: node checks.js HOST:PORT');
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const taskQueue = `ts-${Date.now()}`;
  const connection = await Connection.connect({ address });
  const client = new Client({ connection, namespace: 'default' });
  const workerConnection = await NativeConnection.connect({ address });
  const worker = await Worker.create({
    connection: workerConnection,
    namespace: 'default',
    taskQueue,
    workflowsPath: require.resolve('./workflows'),
    activities,
  });
  let n = 0;
  const start = (...args) => ({ taskQueue, workflowId: `${taskQueue}-${++n}`, args });
  const results = {};
  await worker.runUntil(async () => {
    for (const [name, check] of Object.entries(CHECKS)) {
      console.error(`== ${name}`);
      try {
        await check({ client, connection, start, taskQueue });
        results[name] = 'ok';
      } catch (err) {
        results[name] = String(err && err.stack ? err.stack : err).split('\n').slice(0, 4).join(' | ');
      }
    }
  });
  await workerConnection.close();
  await connection.close();
  console.log(JSON.stringify(results));
  process.exitCode = Object.values(results).every((r) => r === 'ok') ? 0 : 1;
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
