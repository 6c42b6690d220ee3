// BullMQ's side of bench/queue_bench.py. The same protocol as the Python workers there:
//   node queue.mjs enqueue QUEUE N          adds N no-op jobs (addBulk, 1,000 a call); prints one JSON line
//   node queue.mjs work QUEUE CONCURRENCY   connects, says so, starts at a line on stdin, runs jobs until killed;
//                                           prints a JSON line of progress every 50 ms
//   node queue.mjs remove QUEUE             deletes the queue and everything in it
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

// BullMQ 6 takes a client it does not load itself in an ES module (ioredis is its optional dependency).
const connection = new IORedis({ host: "127.0.0.1", port: 6379, maxRetriesPerRequest: null });
const [mode, name, count] = process.argv.slice(2);
const now = () => (performance.timeOrigin + performance.now()) / 1000;
const cpu = () => { const used = process.cpuUsage(); return (used.user + used.system) / 1e6; };

if (mode === "enqueue") {
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  const total = Number(count);
  const began = now(), cpuBefore = cpu();
  for (let start = 0; start < total; start += 1000) {
    const size = Math.min(1000, total - start);
    await queue.addBulk(Array.from({ length: size }, (_, k) => (
      { name: "noop", data: { n: start + k }, opts: { removeOnComplete: true, removeOnFail: true } })));
  }
  console.log(JSON.stringify({ seconds: now() - began, cpu: cpu() - cpuBefore }));
  await queue.close();
  connection.disconnect();
} else if (mode === "work") {
  let done = 0, first = 0, last = 0, cpuFirst = 0, cpuLast = 0;
  const worker = new Worker(name, async () => {}, { connection, concurrency: Number(count), autorun: false });
  await worker.waitUntilReady();
  console.log(JSON.stringify({ ready: true }));  // connected: the benchmark starts every worker at once
  await new Promise((resolve) => process.stdin.once("data", resolve));
  worker.on("completed", () => {
    done += 1;
    last = now();
    cpuLast = cpu();
    if (done === 1) { first = last; cpuFirst = cpuLast; }
  });
  let reported = -1;
  setInterval(() => {
    if (done !== reported) {
      reported = done;
      const rss = process.memoryUsage().rss / 1048576;
      console.log(JSON.stringify({ done, first, last, cpu_first: cpuFirst, cpu_last: cpuLast, rss_mib: rss }));
    }
  }, 50);
  process.on("SIGTERM", async () => { await worker.close(true); process.exit(0); });
  worker.run();
} else if (mode === "remove") {
  const queue = new Queue(name, { connection });
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
} else {
  console.error("usage: node queue.mjs enqueue|work|remove QUEUE [N|CONCURRENCY]");
  process.exit(2);
}
