// Activities of the TypeScript SDK checks (see checks.js).
const { Context, CancelledFailure, CompleteAsyncError } = require('@temporalio/activity');

// Task tokens of activities to complete from the client (same process).
const pendingTokens = [];
const { ApplicationFailure } = require('@temporalio/common');

async function greet(name) {
  return `Hello, ${name}!`;
}

async function fail() {
  throw ApplicationFailure.nonRetryable('boom', 'MyError');
}

// Fails its first two attempts; says on which attempt it succeeded.
async function flaky() {
  const { attempt } = Context.current().info;
  if (attempt < 3) throw ApplicationFailure.retryable(`attempt ${attempt}`, 'Flaky');
  return attempt;
}

// Heartbeats until cancelled; reports the cancellation.
async function heartbeater() {
  const ctx = Context.current();
  for (let i = 0; ; i++) {
    ctx.heartbeat(i);
    try {
      await ctx.sleep(100);
    } catch (err) {
      if (err instanceof CancelledFailure) return `cancelled after ${i + 1} heartbeats`;
      throw err;
    }
  }
}

// Completed later by the client, through its task token.
async function completeLater() {
  pendingTokens.push(Context.current().info.taskToken);
  throw new CompleteAsyncError();
}

module.exports = { greet, fail, flaky, heartbeater, completeLater, pendingTokens };
