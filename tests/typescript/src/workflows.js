// Workflows of the TypeScript SDK checks (see checks.js). Bundled by the worker.
const wf = require('@temporalio/workflow');

const { greet, fail, flaky } = wf.proxyActivities({
  startToCloseTimeout: '10s',
  retry: { maximumAttempts: 3, initialInterval: '50ms' },
});
const { heartbeater } = wf.proxyActivities({
  startToCloseTimeout: '30s',
  heartbeatTimeout: '2s',
  cancellationType: wf.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});
const { greet: greetLocally } = wf.proxyLocalActivities({ startToCloseTimeout: '10s' });

const incSignal = wf.defineSignal('inc');
const countQuery = wf.defineQuery('count');
const addUpdate = wf.defineUpdate('add');

async function hello(name) {
  return await greet(name);
}

async function local(name) {
  return await greetLocally(name);
}

async function retried() {
  return await flaky();
}

async function counter(limit) {
  let count = 0;
  wf.setHandler(incSignal, (n) => {
    count += n;
  });
  wf.setHandler(countQuery, () => count);
  wf.setHandler(
    addUpdate,
    (n) => {
      if (n < 0) throw wf.ApplicationFailure.nonRetryable('negative');
      count += n;
      return count;
    },
    {
      validator: (n) => {
        if (n > 1000) throw new Error('too big');
      },
    }
  );
  await wf.condition(() => count >= limit);
  return count;
}

async function timers() {
  const order = [];
  await Promise.all([
    wf.sleep('300ms').then(() => order.push('slow')),
    wf.sleep('100ms').then(() => order.push('fast')),
  ]);
  const timedOut = !(await wf.condition(() => false, '50ms'));
  return { order, timedOut };
}

async function parent(n) {
  const results = [];
  for (let i = 0; i < n; i++) {
    results.push(
      await wf.executeChild(hello, { args: [`child${i}`], workflowId: `${wf.workflowInfo().workflowId}-c${i}` })
    );
  }
  return results;
}

async function signaller(targetId) {
  await wf.getExternalWorkflowHandle(targetId).signal(incSignal, 5);
}

async function failing() {
  await fail();
}

async function sleeper() {
  try {
    await wf.sleep('1h');
  } catch (err) {
    if (wf.isCancellation(err)) {
      await wf.CancellationScope.nonCancellable(() => greet('cleanup'));
    }
    throw err;
  }
}

async function cancelsActivity() {
  let result;
  await wf.CancellationScope.cancellable(async () => {
    const pending = heartbeater();
    await wf.sleep('500ms');
    wf.CancellationScope.current().cancel();
    try {
      result = await pending;
    } catch (err) {
      result = `activity ended with ${err.name}`;
    }
  }).catch(() => undefined);
  return result;
}

async function looper(i) {
  if (i < 3) await wf.continueAsNew(i + 1);
  return i;
}

async function patched() {
  return wf.patched('p1') ? 'new' : 'old';
}

// Fails until its third attempt, through the workflow retry policy.
async function retriedWorkflow() {
  const { attempt } = wf.workflowInfo();
  if (attempt < 3) throw wf.ApplicationFailure.retryable(`attempt ${attempt}`);
  return attempt;
}

async function upserts() {
  wf.upsertSearchAttributes({ TsKeyword: ['from-ts'], TsInt: [7] });
  await wf.sleep('10ms');
  return wf.workflowInfo().searchAttributes;
}

async function completedLater() {
  const { completeLater } = wf.proxyActivities({ startToCloseTimeout: '1m' });
  return await completeLater();
}

async function cancelsChild() {
  const scope = new wf.CancellationScope();
  const child = await scope.run(() =>
    wf.startChild(sleeper, { workflowId: `${wf.workflowInfo().workflowId}-child` })
  );
  await wf.sleep('200ms');
  scope.cancel();
  try {
    await child.result();
    return 'child completed';
  } catch (err) {
    return err.cause ? err.cause.name : err.name;
  }
}

async function info() {
  const { memo, searchAttributes, attempt, workflowType } = wf.workflowInfo();
  return { memo, attempt, workflowType, hasSearchAttributes: searchAttributes !== undefined };
}

module.exports = {
  hello,
  local,
  retried,
  counter,
  timers,
  parent,
  signaller,
  failing,
  sleeper,
  cancelsActivity,
  looper,
  patched,
  info,
  retriedWorkflow,
  upserts,
  completedLater,
  cancelsChild,
};
